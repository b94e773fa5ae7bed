"""A disk that fills during an atomic write: no half artifact, no temporary file, one line naming it."""

from __future__ import annotations

import errno
import json
import os
import re
import resource
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lesionflow.pipeline import artifacts
from lesionflow.pipeline.config import resolve_config
from lesionflow.pipeline.errors import exit_on_user_error
from lesionflow.pipeline.plan import _data_settings

DATA_SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "data.py"
FULL = [errno.ENOSPC, errno.EDQUOT, errno.EFBIG]
LINES = {
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EFBIG: "file too large",
}


def _full_disk(code: int) -> OSError:
    # What a write(2) into a full device raises: errno and message, and (from a file object) no name.
    return OSError(code, os.strerror(code))


def _half_then_full(code: int):
    """A replacement writer that writes part of its data, then finds the disk full."""

    def write(path, *args, **kwargs):
        with open(path, "wb") as handle:
            handle.write(b'{\n  "half": ')
        raise _full_disk(code)

    return write


def _left_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


@pytest.mark.parametrize("code", FULL)
def test_a_full_disk_mid_write_leaves_neither_the_artifact_nor_its_temporary_file(tmp_path, code):
    final = tmp_path / "tune" / "locked.json"
    with pytest.raises(OSError) as raised, artifacts.atomic_path(final) as tmp:
        _half_then_full(code)(tmp)
    assert _left_in(final.parent) == []
    # The same error, now naming the artifact rather than the temporary file or nothing.
    assert raised.value.errno == code and raised.value.filename == str(final)


@pytest.mark.parametrize("code", FULL)
@pytest.mark.parametrize(
    "writer",
    [
        lambda path: artifacts.write_json(path, {"threshold": 0.5}),
        lambda path: artifacts.write_text(path, "text\n"),
        lambda path: artifacts.write_csv(pd.DataFrame({"a": [1, 2]}), path),
        lambda path: artifacts.save_arrays(path, {"x": np.ones(3)}),
    ],
    ids=["write_json", "write_text", "write_csv", "save_arrays"],
)
def test_each_writer_on_a_full_disk_keeps_the_earlier_artifact_whole(tmp_path, monkeypatch, code, writer):
    final = tmp_path / "artifact"
    final.write_text("the finished artifact of an earlier run\n")
    # Every writer ends in a write into the temporary file: the first one finds the disk full.
    real_open = open

    def full_open(file, mode="r", *args, **kwargs):
        handle = real_open(file, mode, *args, **kwargs)
        if "w" in mode and Path(file).name.startswith(".artifact."):
            handle.close()
            raise _full_disk(code)
        return handle

    monkeypatch.setattr("builtins.open", full_open)
    monkeypatch.setattr(Path, "write_text", lambda self, *a, **k: full_open(self, "w"))
    with pytest.raises(OSError) as raised:
        writer(final)
    monkeypatch.undo()
    assert raised.value.errno == code and raised.value.filename == str(final)
    assert _left_in(tmp_path) == ["artifact"]
    assert final.read_text() == "the finished artifact of an earlier run\n"


def test_a_full_disk_in_array_writer_after_some_arrays_leaves_no_archive(tmp_path):
    final = tmp_path / "val.npz"
    with pytest.raises(OSError) as raised, artifacts.array_writer(final) as add:
        add("0001_1", np.ones((4, 4)))
        raise _full_disk(errno.ENOSPC)
    assert raised.value.filename == str(final) and _left_in(tmp_path) == []


def test_a_full_disk_naming_an_inner_artifact_keeps_that_name(tmp_path):
    outer, inner = tmp_path / "val.npz", tmp_path / "val_tiles.npz"
    with pytest.raises(OSError) as raised, artifacts.atomic_path(outer), artifacts.atomic_path(inner) as tmp:
        _half_then_full(errno.ENOSPC)(tmp)
    assert raised.value.filename == str(inner) and _left_in(tmp_path) == []


def test_other_write_errors_are_not_renamed(tmp_path):
    final = tmp_path / "locked.json"
    with pytest.raises(PermissionError) as raised, artifacts.atomic_path(final):
        raise PermissionError(errno.EACCES, "Permission denied", "/elsewhere")
    assert raised.value.filename == "/elsewhere" and _left_in(tmp_path) == []


@pytest.mark.parametrize("code", FULL)
def test_a_stage_on_a_full_disk_exits_2_with_one_line_naming_the_artifact(capsys, code):
    @exit_on_user_error
    def main() -> None:
        raise OSError(code, os.strerror(code), "results/tune/0123456789ab/locked.json")

    with pytest.raises(SystemExit) as stopped:
        main()
    assert stopped.value.code == 2
    assert capsys.readouterr().err.splitlines() == [
        f"lesionflow: error: {LINES[code]} while writing results/tune/0123456789ab/locked.json"
    ]


@pytest.mark.parametrize(
    "error", [PermissionError(errno.EACCES, "Permission denied", "x"), FileNotFoundError(2, "gone", "x")]
)
def test_other_os_errors_keep_their_traceback(error):
    @exit_on_user_error
    def main() -> None:
        raise error

    with pytest.raises(type(error)):
        main()


def _file_size_limit(limit: int):
    def limit_writes() -> None:
        # Past RLIMIT_FSIZE a write fails with EFBIG once SIGXFSZ (which would kill) is ignored.
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return limit_writes


def test_the_data_stage_on_a_file_size_limit_stops_with_one_line_and_no_half_file(tmp_path):
    data = {"source": "synthetic", "synthetic": {"n_images": 12, "image_size": 64}}
    config = resolve_config({"data": data, "runs": {"base": {}}})
    settings, _ = _data_settings(config, tmp_path)
    out = tmp_path / "results" / "data" / "0123456789ab"
    result = subprocess.run(
        [sys.executable, str(DATA_SCRIPT), "--settings", json.dumps(settings), "--out", str(out)],
        capture_output=True,
        text=True,
        preexec_fn=_file_size_limit(2048),
    )
    assert result.returncode == 2, result.stderr
    line = re.fullmatch(r"lesionflow: error: file too large while writing (\S+)\n", result.stderr)
    assert line, result.stderr
    named = Path(line[1])
    assert named.is_relative_to(out) and not named.exists()
    # Whatever else was written before is whole (under the limit); nothing temporary, no record.
    left = [p for p in out.rglob("*") if p.is_file()]
    assert all(not p.name.startswith(".") and p.stat().st_size <= 2048 for p in left), left
    assert not [p for p in left if "provenance" in p.name or p.suffix == ".json"], left
