"""Tests of lesionflow.evaluation.tune: choice on validation only, ties, fallbacks, the test-split guard."""


import contextlib
import weakref

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from PIL import Image
from schema_settings import lesion_matching, size_bins

from lesionflow.evaluation import tune
from lesionflow.evaluation.metrics import score_images
from lesionflow.evaluation.overlap import segmentation_summary
from lesionflow.evaluation.postprocess import apply_locked
from lesionflow.evaluation.tune import (
    image_counts,
    run_tune,
    tune_on_counts,
    tune_on_validation,
    youden_threshold,
)
from lesionflow.pipeline import artifacts
from lesionflow.pipeline.artifacts import read_json, save_arrays
from lesionflow.pipeline.errors import LesionflowError

SETTINGS = {
    "objective": "dice_pos",
    "thresholds": [0.3, 0.5, 0.7],
    "min_lesion_areas": [0, 4],
    "presence_score": "max_probability",
    "connectivity": 1,
}


def _case(index: int, positive: bool, size: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """A lesion of 0.6 surrounded by a halo of 0.4 (positive), or faint noise (empty)."""
    mask = np.zeros((size, size), dtype=bool)
    prob = np.full((size, size), 0.05, dtype=np.float32)
    if positive:
        r = 4 + index % 3
        prob[r - 1 : r + 4, r - 1 : r + 4] = 0.4
        prob[r : r + 3, r : r + 3] = 0.6
        mask[r : r + 3, r : r + 3] = True
    else:
        prob[index % size, 2] = 0.35  # one stray pixel: removed by area 4 or by gating
    return prob, mask


def _val_set(n: int = 10) -> tuple[dict, dict]:
    probs, masks = {}, {}
    for i in range(n):
        probs[f"{i:04d}_1"], masks[f"{i:04d}_1"] = _case(i, positive=i % 2 == 0)
    return probs, masks


def _brute_force_objective(probs, masks, locked, objective):
    ids = sorted(probs)
    preds = [apply_locked(probs[i], locked)[0] for i in ids]
    table, _ = score_images(
        ids, ids, preds, [masks[i] for i in ids], matching=lesion_matching(), size_bins=size_bins()
    )
    return segmentation_summary(table)[objective]


def test_tune_chooses_threshold_that_maximises_validation_dice():
    probs, masks = _val_set()
    locked, grid = tune_on_validation(probs, masks, SETTINGS)
    # 0.3 keeps the halo, 0.7 keeps nothing, 0.5 reproduces the lesions exactly.
    assert locked["threshold"] == 0.5 and locked["min_lesion_area"] == 0
    assert locked["objective_value"] == pytest.approx(1.0)
    assert locked["chosen_on"] == "validation" and locked["n_val_images"] == 10
    assert len(grid) == 6 and grid["selected"].sum() == 1
    assert grid.loc[grid["selected"], "threshold"].item() == 0.5


def test_grid_values_equal_a_straightforward_per_image_evaluation():
    probs, masks = _val_set()
    for objective in ("dice_pos", "iou_pos", "dice_all"):
        _, grid = tune_on_validation(probs, masks, {**SETTINGS, "objective": objective})
        for row in grid.itertuples():
            locked = {
                "threshold": row.threshold,
                "min_lesion_area": row.min_lesion_area,
                "presence_threshold": row.presence_threshold,
                "presence_score": "max_probability",
                "connectivity": 1,
            }
            expected = _brute_force_objective(probs, masks, locked, objective)
            assert row.objective_value == pytest.approx(expected)


def test_ties_go_to_the_lowest_threshold_and_smallest_area():
    probs, masks = _val_set()
    settings = {**SETTINGS, "thresholds": [0.55, 0.45, 0.5], "min_lesion_areas": [1, 0]}
    locked, grid = tune_on_validation(probs, masks, settings)
    assert grid["objective_value"].nunique() == 1  # every point scores 1
    assert (locked["threshold"], locked["min_lesion_area"]) == (0.45, 0)


def test_presence_threshold_is_youden_j_on_validation():
    truth = np.array([0, 0, 1, 1, 1], dtype=bool)
    scores = np.array([0.1, 0.4, 0.35, 0.8, 0.9])
    # thresholds 0.8 -> J = 2/3; 0.35 -> J = 1 - 0.5 = 0.5.
    assert youden_threshold(truth, scores) == pytest.approx(0.8)
    assert youden_threshold(np.ones(3, dtype=bool), np.ones(3)) is None


def test_presence_threshold_falls_back_to_pixel_threshold_when_validation_has_one_class():
    probs, masks = _val_set()
    positives = {i: p for i, p in probs.items() if masks[i].any()}
    locked, _ = tune_on_validation(positives, {i: masks[i] for i in positives}, SETTINGS)
    assert locked["presence_threshold_rule"] == "fallback_pixel_threshold"
    assert locked["presence_threshold"] == locked["threshold"]
    assert "only lesion-positive" in locked["presence_threshold_reason"]


def test_objective_undefined_everywhere_is_a_user_error():
    probs, masks = _val_set()
    empties = {i: p for i, p in probs.items() if not masks[i].any()}
    with pytest.raises(LesionflowError, match="undefined"):
        tune_on_validation(empties, {i: masks[i] for i in empties}, SETTINGS)


def test_bad_settings_name_the_key():
    probs, masks = _val_set()
    with pytest.raises(LesionflowError, match="tune.objective"):
        tune_on_validation(probs, masks, {**SETTINGS, "objective": "accuracy"})
    with pytest.raises(LesionflowError, match="tune.thresholds"):
        tune_on_validation(probs, masks, {**SETTINGS, "thresholds": [1.5]})
    with pytest.raises(LesionflowError, match="tune.connectivity"):
        tune_on_validation(probs, masks, {**SETTINGS, "connectivity": 4})


def test_connectivity_3_is_refused_for_2d_maps_naming_the_key():
    probs, masks = _val_set()
    with pytest.raises(LesionflowError, match=r"^tune\.connectivity is 3, but the probability maps have 2"):
        tune_on_validation(probs, masks, {**SETTINGS, "connectivity": 3})


def test_connectivity_3_joins_corner_neighbours_of_3d_maps():
    # Each positive volume holds a 2x2x2 lesion and one voxel touching it at a corner only: with
    # connectivity 3 they are one 9-voxel lesion that area 9 keeps; with 1 they are lesions of 8
    # and 1 voxels, both removed.
    probs, masks = {}, {}
    for i in range(6):
        prob = np.full((6, 6, 6), 0.05, dtype=np.float32)
        mask = np.zeros((6, 6, 6), dtype=bool)
        if i % 2 == 0:
            mask[1:3, 1:3, 1:3] = True
            mask[3, 3, 3] = True
            prob[mask] = 0.9
        probs[f"{i:04d}_1"], masks[f"{i:04d}_1"] = prob, mask
    settings = {**SETTINGS, "thresholds": [0.5], "min_lesion_areas": [9]}
    full, _ = tune_on_validation(probs, masks, {**settings, "connectivity": 3})
    faces, _ = tune_on_validation(probs, masks, {**settings, "connectivity": 1})
    assert full["connectivity"] == 3 and full["objective_value"] == pytest.approx(1.0)
    assert faces["objective_value"] == pytest.approx(0.0)


def test_grid_of_5_by_4_scores_every_combination_and_locks_the_best():
    rng = np.random.default_rng(0)
    probs, masks = {}, {}
    for i in range(50):
        mask = np.zeros((128, 128), dtype=bool)
        if i % 3:
            mask[30:50, 40:60] = True
        noise = rng.normal(0.1, 0.1, (128, 128))
        probs[str(i)] = np.clip(noise + 0.6 * mask, 0, 1).astype(np.float32)
        masks[str(i)] = mask
    settings = {
        **SETTINGS,
        "thresholds": [0.3, 0.4, 0.5, 0.6, 0.7],
        "min_lesion_areas": [0, 5, 10, 20],
        "presence_score": "lesion_area",
    }
    locked, grid = tune_on_validation(probs, masks, settings)
    assert len(grid) == 20
    assert locked["objective_value"] == pytest.approx(grid["objective_value"].max())


# --- the stage, on files --------------------------------------------------------------------


def _write_dataset(folder, n=10):
    """Manifest with PNG images and masks, split.csv (even ids val, odd test), val/test npz."""
    rows, split_rows, val, test = [], [], {}, {}
    for i in range(n):
        image_id = f"{i:04d}_1"
        prob, mask = _case(i // 2, positive=(i // 2) % 2 == 0)
        Image.fromarray((prob * 255).astype(np.uint8)).save(folder / f"{image_id}.png")
        Image.fromarray(mask.astype(np.uint8) * 255).save(folder / f"{image_id}_mask.png")
        rows.append({"image": f"{image_id}.png", "mask": f"{image_id}_mask.png", "subject": i})
        subset = "val" if i % 2 == 0 else "test"
        split_rows.append(
            {
                "image_id": image_id,
                "subject": str(i),
                "split": subset,
                "lesion_positive": mask.any(),
            }
        )
        (val if subset == "val" else test)[image_id] = prob.astype(np.float16)
    pd.DataFrame(rows).to_csv(folder / "manifest.csv", index=False)
    pd.DataFrame(split_rows).to_csv(folder / "split.csv", index=False)
    save_arrays(folder / "val.npz", val)
    save_arrays(folder / "test.npz", test)
    return folder


def test_run_tune_writes_locked_settings_chosen_on_validation(tmp_path):
    data = _write_dataset(tmp_path)
    out = tmp_path / "tune"
    run_tune(data / "manifest.csv", data / "split.csv", data / "val.npz", SETTINGS, out)
    locked = read_json(out / "locked.json")
    assert locked["chosen_on"] == "validation" and locked["n_val_images"] == 5
    assert locked["threshold"] == 0.5
    grid = pd.read_csv(out / "tuning_grid.csv")
    assert len(grid) == 6 and "false_positive_rate_empty" in grid


def test_run_tune_accepts_the_settings_wrapped_in_a_tune_section(tmp_path):
    data = _write_dataset(tmp_path)
    locked = run_tune(
        data / "manifest.csv", data / "split.csv", data / "val.npz", {"tune": SETTINGS}, tmp_path
    )
    assert locked["threshold"] == 0.5


def test_tune_refuses_test_split_predictions(tmp_path):
    data = _write_dataset(tmp_path)
    out = tmp_path / "tune"
    with pytest.raises(LesionflowError, match=r"test\.npz.*outside the 'val' split"):
        run_tune(data / "manifest.csv", data / "split.csv", data / "test.npz", SETTINGS, out)
    assert not (out / "locked.json").exists()


def test_tune_refuses_a_file_mixing_val_and_test_predictions(tmp_path):
    data = _write_dataset(tmp_path)
    mixed = {"0000_1": np.zeros((16, 16), np.float16), "0001_1": np.zeros((16, 16), np.float16)}
    save_arrays(data / "mixed.npz", mixed)
    with pytest.raises(LesionflowError, match=r"mixed\.npz.*0001_1 \(test\)"):
        run_tune(data / "manifest.csv", data / "split.csv", data / "mixed.npz", SETTINGS, data)


# --- the stage reads one image at a time ------------------------------------------------------


def _write_volumes(folder, n=8):
    """NIfTI masks of val volumes (anisotropic spacing) and their maps in val.npz."""
    probs, masks, rows, split_rows = {}, {}, [], []
    for i in range(n):
        image_id = f"{i:04d}_1"
        prob = np.full((6, 7, 5), 0.05, dtype=np.float32)
        mask = np.zeros((6, 7, 5), dtype=bool)
        if i % 2 == 0:
            mask[1 + i % 3 : 4, 2:5, 1:3] = True
            prob[mask] = 0.6
            prob[0, 0, 0] = 0.4  # a stray voxel: removed by area 2 or a threshold above it
        else:
            prob[i % 6, 3, 2] = 0.35
        volume = nib.Nifti1Image(mask.astype(np.uint8), np.diag([0.9, 1.2, 3.0, 1.0]))
        nib.save(volume, folder / f"{image_id}.nii.gz")
        rows.append({"image_id": image_id, "image": f"{image_id}.nii.gz", "mask": f"{image_id}.nii.gz",
                     "subject": image_id})  # fmt: skip
        split_rows.append({"image_id": image_id, "subject": image_id, "split": "val"})
        probs[image_id], masks[image_id] = prob.astype(np.float16), mask
    pd.DataFrame(rows).to_csv(folder / "manifest.csv", index=False)
    pd.DataFrame(split_rows).to_csv(folder / "split.csv", index=False)
    save_arrays(folder / "val.npz", probs)
    return probs, masks


def test_run_tune_on_volumes_equals_tuning_on_maps_and_masks_held_in_memory(tmp_path):
    probs, masks = _write_volumes(tmp_path)
    settings = {**SETTINGS, "min_lesion_areas": [0, 2], "connectivity": 3, "presence_score": "lesion_area"}
    locked = run_tune(
        tmp_path / "manifest.csv", tmp_path / "split.csv", tmp_path / "val.npz", settings, tmp_path
    )
    want_locked, want_grid = tune_on_validation(probs, masks, settings)
    assert locked == want_locked
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "tuning_grid.csv"), want_grid, check_dtype=False)
    # The lowest threshold keeps the stray voxel, which area 2 removes: a perfect score.
    assert (locked["threshold"], locked["min_lesion_area"], locked["objective_value"]) == (0.3, 2, 1.0)


def test_run_tune_holds_at_most_the_previous_map_and_mask_when_it_reads_the_next(tmp_path, monkeypatch):
    _write_volumes(tmp_path)
    handed_out = {"maps": [], "masks": []}
    most_alive = {"maps": 0, "masks": 0}

    def hand_out(kind, array):
        alive = sum(ref() is not None for ref in handed_out[kind])
        most_alive[kind] = max(most_alive[kind], alive)
        handed_out[kind].append(weakref.ref(array))
        return array

    class Spy(dict):
        def __getitem__(self, key):
            return hand_out("maps", self.lazy[key])

    @contextlib.contextmanager
    def open_arrays(path):
        with artifacts.open_arrays(path) as lazy:
            spy = Spy.fromkeys(lazy)  # the names only; every lookup goes to the file
            spy.lazy = lazy
            yield spy

    real_read = tune.read_manifest_mask

    def read_manifest_mask(row):
        loaded = real_read(row)
        hand_out("masks", loaded.array)
        return loaded

    monkeypatch.setattr(tune, "open_arrays", open_arrays)
    monkeypatch.setattr(tune, "read_manifest_mask", read_manifest_mask)
    run_tune(tmp_path / "manifest.csv", tmp_path / "split.csv", tmp_path / "val.npz", SETTINGS, tmp_path)
    assert len(handed_out["maps"]) == len(handed_out["masks"]) == 8
    # The one before may still be bound to a loop variable, none earlier.
    assert most_alive["maps"] <= 1 and most_alive["masks"] <= 1


def test_image_counts_are_what_tuning_reads_of_each_image():
    probs, masks = _val_set()
    counts = [image_counts(probs[i], masks[i], SETTINGS) for i in sorted(probs)]
    assert tune_on_counts(counts, SETTINGS)[0] == tune_on_validation(probs, masks, SETTINGS)[0]
    first = counts[0]  # a 3x3 lesion of 0.6 in a 5x5 halo of 0.4
    assert first.gt_pixels == 9 and first.max_prob == pytest.approx(0.6)
    assert first.area_at_t.tolist() == [25, 9, 0]  # thresholds 0.3, 0.5, 0.7
    assert first.pred.tolist() == [[25, 25], [9, 9], [0, 0]]
    assert first.inter.tolist() == [[9, 9], [9, 9], [0, 0]]
