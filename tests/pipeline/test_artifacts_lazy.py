"""Tests of artifacts.open_arrays: an .npz read one array at a time, equal to load_arrays."""

from __future__ import annotations

import numpy as np
import pytest

from lesionflow.pipeline.artifacts import array_writer, load_arrays, open_arrays, save_arrays


def _arrays():
    rng = np.random.default_rng(0)
    return {
        "0001_1": rng.random((5, 6)).astype(np.float16),
        "0002_1": rng.random((3, 4, 2)).astype(np.float16),
        "b": np.arange(7, dtype=np.int32),
    }


@pytest.mark.parametrize("writer", ["save_arrays", "array_writer"])
def test_open_arrays_gives_the_arrays_load_arrays_gives(tmp_path, writer):
    path = tmp_path / "maps.npz"
    if writer == "save_arrays":
        save_arrays(path, _arrays())
    else:
        with array_writer(path) as add:
            for name, array in _arrays().items():
                add(name, array)
    eager = load_arrays(path)
    with open_arrays(path) as lazy:
        assert sorted(lazy) == sorted(eager) and len(lazy) == 3 and "b" in lazy
        for name, array in eager.items():
            np.testing.assert_array_equal(lazy[name], array)
            assert lazy[name].dtype == array.dtype


def test_open_arrays_reads_nothing_until_an_array_is_looked_up_and_then_only_that_one(tmp_path, monkeypatch):
    path = tmp_path / "maps.npz"
    save_arrays(path, _arrays())
    reads = []
    real = np.lib.format.read_array

    def read_array(handle, *args, **kwargs):
        array = real(handle, *args, **kwargs)
        reads.append(array.shape)
        return array

    monkeypatch.setattr(np.lib.format, "read_array", read_array)
    with open_arrays(path) as lazy:
        assert sorted(lazy) == ["0001_1", "0002_1", "b"] and reads == []
        lazy["0002_1"]
        assert reads == [(3, 4, 2)]
        lazy["0002_1"]
        assert reads == [(3, 4, 2), (3, 4, 2)]  # nothing is cached: each lookup reads again


def test_open_arrays_closes_the_file_when_the_block_ends(tmp_path):
    path = tmp_path / "maps.npz"
    save_arrays(path, _arrays())
    with open_arrays(path) as lazy:
        pass
    with pytest.raises((ValueError, AttributeError, OSError)):
        lazy["b"]
