"""k-fold cross-validation: development images dealt into subject-grouped folds, each fold's subsets."""

import json

import numpy as np
import pandas as pd
import pytest

from lesionflow.data.folds import fold_subsets, run_fold, with_folds
from lesionflow.pipeline.errors import LesionflowError


def base_split(n_subjects=12, images_per_subject=2):
    """Two images per subject; the last quarter of subjects in test, the rest in train or val."""
    rows = []
    for s in range(n_subjects):
        subset = "test" if s >= n_subjects * 3 // 4 else ("val" if s % 4 == 0 else "train")
        for i in range(images_per_subject):
            positive = (s + i) % 2 == 0
            row = {"image_id": f"s{s}_{i}", "subject": f"s{s}", "split": subset}
            rows.append({**row, "lesion_positive": positive})
    return pd.DataFrame(rows)


def test_every_development_subject_is_in_exactly_one_fold_and_test_in_none():
    split = base_split()
    folded = with_folds(split, 3, 0, split["lesion_positive"].to_numpy())
    development = split["split"] != "test"
    assert folded.loc[~development, "fold"].isna().all()
    assert set(folded.loc[development, "fold"]) == {0, 1, 2}
    assert (folded.loc[development, "split"] == "train").all()
    assert folded.loc[development].groupby("subject")["fold"].nunique().max() == 1
    assert (folded.loc[~development, "split"] == "test").all()


def test_too_many_folds_for_the_subjects_are_refused_naming_the_key():
    split = base_split(n_subjects=4)
    with pytest.raises(LesionflowError, match="split.folds: 5 folds need at least 5 subjects"):
        with_folds(split, 5, 0, split["lesion_positive"].to_numpy())


def test_a_fold_is_val_the_other_folds_train_and_tiles_follow_their_source():
    images = pd.DataFrame({"image_id": ["a", "b", "c"], "split": ["train", "train", "test"]})
    tiles = pd.DataFrame({"image_id": ["a_0", "a_1", "b_0", "c_0"], "source_image_id": ["a", "a", "b", "c"],
                          "split": ["train", "train", "train", "test"]})  # fmt: skip
    fold_of = {"a": 0, "b": 1}
    assert list(fold_subsets(images, fold_of, "image_id", 0)["split"]) == ["val", "train", "test"]
    tile_subsets = fold_subsets(tiles, fold_of, "source_image_id", 1)["split"]
    assert list(tile_subsets) == ["train", "train", "val", "test"]


def test_run_fold_writes_the_folds_subsets_summary_and_record(tmp_path):
    split = base_split()
    folded = with_folds(split, 2, 1, split["lesion_positive"].to_numpy())
    folded.to_csv(tmp_path / "split.csv", index=False)
    items = folded[["image_id", "subject", "split"]].assign(source_image_id=folded["image_id"])
    items.to_csv(tmp_path / "items.csv", index=False)
    folded[["image_id", "subject", "split"]].assign(scale=1.0).to_csv(tmp_path / "images.csv", index=False)
    record = run_fold(tmp_path / "split.csv", tmp_path / "items.csv", tmp_path / "images.csv",
                      {"fold": 1, "score_bins": [2, 5, 10]}, tmp_path / "out")  # fmt: skip
    written = pd.read_csv(tmp_path / "out" / "split.csv", dtype={"image_id": str})
    in_fold = written["fold"] == 1
    assert (written.loc[in_fold, "split"] == "val").all()
    assert (written.loc[written["fold"] == 0, "split"] == "train").all()
    assert record["n_folds"] == 2 and record["images_per_subset"]["test"] == 6
    summary = pd.read_csv(tmp_path / "out" / "split_summary.csv").set_index("split")
    assert summary.loc["val", "n"] == in_fold.sum()
    assert json.loads((tmp_path / "out" / "fold.json").read_text())["fold"] == 1
    items_out = pd.read_csv(tmp_path / "out" / "items_split.csv")
    assert np.array_equal(items_out["split"], written["split"])


def test_a_fold_outside_the_split_is_refused(tmp_path):
    split = base_split()
    with_folds(split, 2, 0, split["lesion_positive"].to_numpy()).to_csv(tmp_path / "split.csv", index=False)
    with pytest.raises(LesionflowError, match=r"expected a fold of .* \(0 to 1\), got 2"):
        run_fold(tmp_path / "split.csv", tmp_path / "split.csv", tmp_path / "split.csv",
                 {"fold": 2, "score_bins": [2]}, tmp_path / "out")  # fmt: skip
