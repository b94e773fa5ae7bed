"""An ensemble's maps: the mean of its members' maps, image by image, in the infer stage's files."""

import json

import numpy as np
import pandas as pd
import pytest

from lesionflow.model.ensemble import run_ensemble
from lesionflow.pipeline.artifacts import load_arrays, save_arrays, write_csv, write_json
from lesionflow.pipeline.errors import LesionflowError

IDS = ["a", "b", "c"]


def member(folder, seed, presence=None, kind="probabilities", ids=IDS):
    """A member's infer folder for subset val: maps, tiles, presence table and record."""
    rng = np.random.default_rng(seed)
    maps = {image_id: rng.random((6, 5)).astype(np.float16) for image_id in ids}
    folder.mkdir(parents=True)
    save_arrays(folder / "val.npz", maps)
    save_arrays(folder / "val_tiles.npz", maps)
    probability = np.full(len(ids), np.nan) if presence is None else np.asarray(presence, float)
    write_csv(pd.DataFrame({"image_id": ids, "presence_logit": np.nan, "presence_probability": probability}),
              folder / "val_presence.csv")  # fmt: skip
    write_json(folder / "val_infer.json", {"subset": "val", "kind": kind})
    return maps


def test_the_ensemble_map_is_the_mean_of_its_members(tmp_path):
    first = member(tmp_path / "m1", 0)
    second = member(tmp_path / "m2", 1)
    record = run_ensemble([tmp_path / "m1", tmp_path / "m2"], "val", tmp_path / "out")
    maps = load_arrays(tmp_path / "out" / "val.npz")
    for image_id in IDS:
        expected = (first[image_id].astype(np.float32) + second[image_id].astype(np.float32)) / 2
        assert np.allclose(maps[image_id], expected, atol=1e-3)
    assert sorted(load_arrays(tmp_path / "out" / "val_tiles.npz")) == IDS
    assert record["source"] == "ensemble" and len(record["members"]) == 2 and record["notes"] == []
    assert json.loads((tmp_path / "out" / "val_infer.json").read_text())["n_images"] == 3


def test_presence_is_averaged_only_where_every_member_has_a_classifier(tmp_path):
    member(tmp_path / "m1", 0, presence=[0.2, 0.8, 0.5])
    member(tmp_path / "m2", 1, presence=[0.4, 0.6, np.nan])
    run_ensemble([tmp_path / "m1", tmp_path / "m2"], "val", tmp_path / "out")
    table = pd.read_csv(tmp_path / "out" / "val_presence.csv")
    assert table["presence_probability"].iloc[:2].tolist() == pytest.approx([0.3, 0.7])
    assert np.isnan(table["presence_probability"].iloc[2]) and np.isnan(table["presence_logit"].iloc[2])
    assert table["presence_logit"].iloc[0] == pytest.approx(np.log(0.3 / 0.7))


def test_members_giving_masks_are_named_as_votes(tmp_path):
    member(tmp_path / "m1", 0)
    member(tmp_path / "m2", 1, kind="masks")
    record = run_ensemble([tmp_path / "m1", tmp_path / "m2"], "val", tmp_path / "out")
    assert "0/1 votes" in record["notes"][0] and "m2" in record["notes"][0]


def test_members_of_other_images_are_refused_naming_them(tmp_path):
    member(tmp_path / "m1", 0)
    member(tmp_path / "m2", 1, ids=["a", "b", "d"])
    with pytest.raises(LesionflowError, match=r"images differ.*\['c', 'd'\]"):
        run_ensemble([tmp_path / "m1", tmp_path / "m2"], "val", tmp_path / "out")
    assert not (tmp_path / "out" / "val.npz").exists()


def test_one_member_is_not_an_ensemble(tmp_path):
    member(tmp_path / "m1", 0)
    with pytest.raises(LesionflowError, match="at least two members"):
        run_ensemble([tmp_path / "m1"], "val", tmp_path / "out")
