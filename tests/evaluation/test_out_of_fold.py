"""Pooled out-of-fold metrics: each fold's validation images, scored once, summarised together."""

import pandas as pd
import pytest
from leaderboards import compare_settings
from schema_settings import lesion_matching, size_bins
from tiny_data import random_mask_stack

from lesionflow.evaluation.metrics import LESION_COLUMNS, score_images
from lesionflow.evaluation.out_of_fold import pooled_row, write_out_of_fold
from lesionflow.pipeline.artifacts import write_csv, write_json
from lesionflow.pipeline.errors import LesionflowError


def fold_tables(tmp_path, name, ids):
    """A fold run's val tables: random predictions of random masks, one image per id."""
    preds, gts = random_mask_stack(n=max(len(ids), 4), seed=len(name))
    preds, gts = preds[-len(ids):], gts[-len(ids):]
    subjects = [f"s_{image_id}" for image_id in ids]
    scores, called = [float(p.mean()) for p in preds], [p.any() for p in preds]
    per_image, lesions = score_images(
        ids, subjects, list(preds), list(gts), None, scores, called,
        matching=lesion_matching(), size_bins=size_bins(),
    )  # fmt: skip
    write_csv(per_image, tmp_path / f"{name}_val.csv")
    write_csv(lesions if len(lesions) else pd.DataFrame(columns=LESION_COLUMNS), tmp_path / f"{name}_les.csv")
    write_json(tmp_path / f"{name}.json", {"settings": {"size_bins": size_bins()}})
    return per_image


def test_the_pooled_row_counts_every_folds_val_images_once(tmp_path):
    first = fold_tables(tmp_path, "a.fold0", [f"x{i}" for i in range(12)])
    second = fold_tables(tmp_path, "a.fold1", [f"y{i}" for i in range(12)])
    runs = ["a.fold0", "a.fold1"]
    table = write_out_of_fold(
        {run: "a" for run in runs},
        {run: tmp_path / f"{run}_val.csv" for run in runs},
        {run: tmp_path / f"{run}_les.csv" for run in runs},
        {run: tmp_path / f"{run}.json" for run in runs},
        compare_settings(bootstrap={"n_resamples": 50})["bootstrap"],
        tmp_path / "out",
    )
    row = table.set_index("group").loc["a"]
    assert row["n_folds"] == 2 and row["n_images"] == 24
    pooled = pd.concat([first, second])
    positive = pooled[pooled["gt_pixels"] > 0]
    assert row["oof_dice_pos"] == pytest.approx(positive["dice"].mean())
    assert pd.read_csv(tmp_path / "out" / "leaderboard_folds.csv")["runs"].tolist() == ["a.fold0, a.fold1"]


def test_an_image_in_two_folds_val_is_refused(tmp_path):
    fold_tables(tmp_path, "a.fold0", ["x0", "x1"])
    fold_tables(tmp_path, "a.fold1", ["x1", "x2"])
    runs = ["a.fold0", "a.fold1"]
    val = {run: tmp_path / f"{run}_val.csv" for run in runs}
    lesions = {run: tmp_path / f"{run}_les.csv" for run in runs}
    with pytest.raises(LesionflowError, match=r"images \['x1'\] are in the val of two folds"):
        pooled_row(runs, val, lesions, compare_settings()["bootstrap"], size_bins())
