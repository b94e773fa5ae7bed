"""Tests of lesionflow.evaluation.evaluate: locked settings applied to val and test, summary.json contract."""

import contextlib
import json
import weakref
from collections.abc import Mapping

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from scipy import ndimage

from lesionflow.evaluation import evaluate, tune
from lesionflow.evaluation.evaluate import run_evaluate
from lesionflow.evaluation.metrics import LESION_COLUMNS, PER_IMAGE_COLUMNS
from lesionflow.io.readers import read_mask
from lesionflow.pipeline import artifacts
from lesionflow.pipeline.artifacts import read_json, save_arrays, write_json
from lesionflow.pipeline.config import complete_run_section
from lesionflow.pipeline.errors import LesionflowError

LOCKED = {
    "threshold": 0.5,
    "min_lesion_area": 0,
    "presence_threshold": 0.55,
    "presence_score": "max_probability",
    "connectivity": 1,
    "objective": "dice_pos",
    "objective_value": 1.0,
    "n_val_images": 2,
    "chosen_on": "validation",
}


def _write(folder):
    """Four images: val (positive, empty) and test (positive, empty with a 0.52 blob)."""
    size = 12
    specs = {
        "0001_1": ("val", True, 0.9),
        "0002_1": ("val", False, 0.0),
        "0003_1": ("test", True, 0.9),
        # Above the pixel threshold but below the presence threshold: gating must empty it.
        "0004_1": ("test", False, 0.52),
    }
    rows, split_rows, arrays = [], [], {"val": {}, "test": {}}
    for image_id, (subset, positive, level) in specs.items():
        mask = np.zeros((size, size), dtype=bool)
        prob = np.full((size, size), 0.05, dtype=np.float32)
        if positive:
            mask[3:6, 3:6] = True
            prob[3:6, 3:6] = level
        elif level:
            prob[8:10, 8:10] = level
        Image.fromarray((prob * 255).astype(np.uint8)).save(folder / f"{image_id}.png")
        Image.fromarray(mask.astype(np.uint8) * 255).save(folder / f"{image_id}_m.png")
        rows.append({"image": f"{image_id}.png", "mask": f"{image_id}_m.png", "subject": image_id})
        split_rows.append({"image_id": image_id, "subject": image_id[:4], "split": subset})
        arrays[subset][image_id] = prob.astype(np.float16)
    pd.DataFrame(rows).to_csv(folder / "manifest.csv", index=False)
    pd.DataFrame(split_rows).to_csv(folder / "split.csv", index=False)
    save_arrays(folder / "val.npz", arrays["val"])
    save_arrays(folder / "test.npz", arrays["test"])
    write_json(folder / "locked.json", LOCKED)
    return folder


def _run(folder, out, val="val.npz", test="test.npz", settings=None):
    return run_evaluate(
        folder / "manifest.csv",
        folder / "split.csv",
        folder / val,
        folder / test,
        folder / "locked.json",
        complete_run_section("evaluate", (settings or {}).get("evaluate", settings or {})),
        out,
    )


def test_evaluate_writes_per_image_tables_and_summary_with_the_contract_keys(tmp_path):
    data = _write(tmp_path)
    out = tmp_path / "evaluate"
    _run(data, out)
    summary = read_json(out / "summary.json")
    assert set(summary) == {
        "level", "resolution", "val", "test", "locked", "settings", "conventions"
    }
    assert summary["level"] == "image" and summary["resolution"].startswith("original")
    assert summary["locked"]["threshold"] == 0.5
    for subset in ("val", "test"):
        table = pd.read_csv(out / f"per_image_{subset}.csv", dtype={"image_id": str})
        assert list(table.columns) == PER_IMAGE_COLUMNS and len(table) == 2
        lesions = pd.read_csv(out / f"lesions_{subset}.csv", dtype={"image_id": str})
        assert list(lesions.columns) == LESION_COLUMNS and len(lesions) == 1
    test = summary["test"]
    assert test["dice_pos"] == pytest.approx(1.0) and test["dice_pos_n"] == 1
    assert test["dice_all_convention"].startswith("empty reference and empty prediction")
    assert "dice_iou" in summary["conventions"]


def test_presence_gating_removes_a_prediction_in_an_empty_test_image(tmp_path):
    data = _write(tmp_path)
    summary = _run(data, tmp_path / "out")
    table = pd.read_csv(tmp_path / "out" / "per_image_test.csv", dtype={"image_id": str})
    empty = table.set_index("image_id").loc["0004_1"]
    assert empty["pred_pixels"] == 0 and not empty["presence_pred"]
    assert np.isnan(empty["dice"])  # empty vs empty stays undefined
    assert summary["test"]["false_positive_rate_empty"] == 0.0
    assert summary["test"]["presence_roc_auc"] == pytest.approx(1.0)


def test_undefined_values_stay_empty_cells_and_are_counted_in_the_summary(tmp_path):
    data = _write(tmp_path)
    _run(data, tmp_path / "out")
    summary = read_json(tmp_path / "out" / "summary.json")
    table = pd.read_csv(tmp_path / "out" / "per_image_val.csv", dtype={"image_id": str})
    empty = table.set_index("image_id").loc["0002_1"]
    # Empty reference, empty prediction, constant probability map: all undefined, none 0 or 1.
    assert np.isnan(empty["dice"]) and np.isnan(empty["iou"]) and np.isnan(empty["pearson"])
    assert summary["val"]["nan_counts"]["pearson_mean"] == 1
    assert summary["val"]["pearson_mean_n"] == 1


def test_evaluate_refuses_swapped_probability_files(tmp_path):
    data = _write(tmp_path)
    with pytest.raises(LesionflowError, match=r"test\.npz.*outside the 'val' split"):
        _run(data, tmp_path / "out", val="test.npz", test="val.npz")


def test_evaluate_refuses_unknown_settings_naming_the_key(tmp_path):
    data = _write(tmp_path)
    with pytest.raises(LesionflowError, match=r"evaluate\.bootstrap\.n_resample'"):
        _run(data, tmp_path / "out", settings={"evaluate": {"bootstrap": {"n_resample": 10}}})
    with pytest.raises(LesionflowError, match=r"evaluate\.size_bin'"):
        _run(data, tmp_path / "out", settings={"size_bin": [10]})


def test_evaluate_refuses_incomplete_settings_instead_of_guessing_a_default(tmp_path):
    data = _write(tmp_path)
    settings = complete_run_section("evaluate", {})
    del settings["bootstrap"]["seed"]
    with pytest.raises(LesionflowError, match=r"missing keys \['evaluate\.bootstrap\.seed'\]"):
        run_evaluate(
            data / "manifest.csv", data / "split.csv", data / "val.npz", data / "test.npz",
            data / "locked.json", settings, tmp_path / "out",
        )


def test_summary_records_intervals_and_how_they_were_resampled(tmp_path):
    data = _write(tmp_path)
    settings = {"bootstrap": {"n_resamples": 50, "seed": 3}}
    summary = _run(data, tmp_path / "out", settings=settings)
    test = summary["test"]
    assert test["bootstrap"] == {
        "unit": "subject",
        "method": "percentile",
        "n_resamples": 50,
        "n_subjects": 2,
        "seed": 3,
        "confidence": 0.95,
    }
    assert test["dice_pos_ci_low"] <= test["dice_pos"] <= test["dice_pos_ci_high"]
    assert [row["size_bin"] for row in test["detection_by_size"]] == ["<50", "50-499", ">=500"]


def test_lesion_matching_connectivity_defaults_to_the_locked_one(tmp_path):
    data = _write(tmp_path)
    summary = _run(data, tmp_path / "out")
    assert summary["settings"]["lesion_matching"]["connectivity"] == LOCKED["connectivity"]
    explicit = _run(data, tmp_path / "out2", settings={"lesion_matching": {"connectivity": 2}})
    assert explicit["settings"]["lesion_matching"]["connectivity"] == 2


def test_evaluate_refuses_locked_settings_not_chosen_on_validation(tmp_path):
    data = _write(tmp_path)
    write_json(data / "locked.json", {**LOCKED, "chosen_on": "test"})
    with pytest.raises(LesionflowError, match="chosen_on"):
        _run(data, tmp_path / "out")


def test_tiles_are_scored_apart_with_locked_areas_at_their_scale(tmp_path):
    data = _write(tmp_path)
    # A minimum area of 16 original pixels removes the 9-pixel lesions of the whole images; the
    # tiles were downscaled by 0.5, where the same rule keeps lesions of 4 pixels and more.
    write_json(data / "locked.json", {**LOCKED, "min_lesion_area": 16})
    split = pd.read_csv(data / "split.csv", dtype=str)
    split.assign(source_image_id=split["image_id"]).to_csv(data / "tile_split.csv", index=False)
    pd.DataFrame({"image_id": split["image_id"], "scale": 0.5}).to_csv(data / "images.csv", index=False)
    out = tmp_path / "evaluate"
    tiles = {
        "manifest": data / "manifest.csv", "split": data / "tile_split.csv",
        "images": data / "images.csv", "val": data / "val.npz", "test": data / "test.npz",
    }
    run_evaluate(
        data / "manifest.csv", data / "split.csv", data / "val.npz", data / "test.npz",
        data / "locked.json", complete_run_section("evaluate", {}), out, tiles=tiles,
    )
    images = pd.read_csv(out / "per_image_test.csv", dtype={"image_id": str}).set_index("image_id")
    tile_table = pd.read_csv(out / "per_tile_test.csv", dtype={"image_id": str}).set_index("image_id")
    assert images.loc["0003_1", "dice"] == 0 and tile_table.loc["0003_1", "dice"] == 1
    summary = read_json(out / "summary_tiles.json")
    assert summary["level"] == "tile" and "0.5" in summary["resolution"]
    assert summary["locked"]["min_lesion_area"] == 16
    assert (out / "lesions_tiles_val.csv").is_file()


def test_a_connectivity_the_masks_cannot_have_names_its_config_key(tmp_path):
    data = _write(tmp_path)
    message = r"evaluate\.lesion_matching\.connectivity is 3, but the masks have 2 spatial axes"
    with pytest.raises(LesionflowError, match=message):
        _run(data, tmp_path / "out", settings={"lesion_matching": {"connectivity": 3}})


# --- volumes: distances in mm, sizes in mm³, one image at a time ------------------------------

SPACING = (0.8, 1.5, 3.0)


def _lesion_pair(rng, shape):
    """A reference of one to three random blobs and a map that finds them roughly, plus noise."""
    grid = np.indices(shape)
    gt = np.zeros(shape, dtype=bool)
    for _ in range(int(rng.integers(1, 4))):
        centre = [rng.integers(1, s - 1) for s in shape]
        radii = rng.uniform(1.0, 3.0, len(shape))
        gt |= sum(((g - c) / r) ** 2 for g, c, r in zip(grid, centre, radii, strict=True)) <= 1
    blurred = ndimage.gaussian_filter(gt.astype(float), 0.8) * 1.3
    return gt, np.clip(blurred + rng.normal(0, 0.12, shape), 0, 1).astype(np.float16)


def _write_cases(folder, kind):
    """Six images, val and test alternating, the last two lesion-free: PNG pictures or NIfTI volumes."""
    rng = np.random.default_rng(5)
    shape = (20, 24) if kind == "2d" else (12, 14, 10)
    rows, split_rows, arrays = [], [], {"val": {}, "test": {}}
    for k in range(6):
        image_id, subset = f"{k:04d}_1", ("val", "test")[k % 2]
        gt, prob = _lesion_pair(rng, shape)
        if k >= 4:
            gt[:] = False
        if kind == "2d":
            mask_file = f"{image_id}_m.png"
            Image.fromarray(gt.astype(np.uint8) * 255).save(folder / mask_file)
        else:
            mask_file = f"{image_id}_m.nii.gz"
            nib.save(nib.Nifti1Image(gt.astype(np.uint8), np.diag([*SPACING, 1.0])), folder / mask_file)
        rows.append({"image_id": image_id, "image": mask_file, "mask": mask_file, "subject": image_id})
        split_rows.append({"image_id": image_id, "subject": image_id[:4], "split": subset})
        arrays[subset][image_id] = prob
    pd.DataFrame(rows).to_csv(folder / "manifest.csv", index=False)
    pd.DataFrame(split_rows).to_csv(folder / "split.csv", index=False)
    save_arrays(folder / "val.npz", arrays["val"])
    save_arrays(folder / "test.npz", arrays["test"])
    write_json(folder / "locked.json", LOCKED)
    return arrays


def _monai_distances(pred, gt, spacing):
    from monai.metrics import compute_average_surface_distance, compute_hausdorff_distance

    p = torch.from_numpy(pred[None, None].astype(np.float32))
    g = torch.from_numpy(gt[None, None].astype(np.float32))
    hd = compute_hausdorff_distance(p, g, percentile=95, spacing=list(spacing))
    return float(hd), float(compute_average_surface_distance(p, g, symmetric=True, spacing=list(spacing)))


def _expected_row(prob, gt, spacing, connectivity):
    """The per-image values, computed here from numpy, scipy and MONAI rather than lesionflow."""
    prob = prob.astype(np.float32)
    called = prob.max() >= LOCKED["presence_threshold"]
    pred = (prob >= LOCKED["threshold"]) & called
    inter, n_pred, n_gt = int((pred & gt).sum()), int(pred.sum()), int(gt.sum())
    structure = ndimage.generate_binary_structure(gt.ndim, connectivity)
    row = {
        "gt_pixels": n_gt,
        "pred_pixels": n_pred,
        "dice": 2 * inter / (n_pred + n_gt) if n_pred + n_gt else np.nan,
        "recall": inter / n_gt if n_gt else np.nan,
        "n_ref_lesions": ndimage.label(gt, structure)[1],
        "n_pred_lesions": ndimage.label(pred, structure)[1],
        "presence_pred": bool(called),
        "hd95": np.nan,
        "msd": np.nan,
    }
    if n_pred and n_gt:
        row["hd95"], row["msd"] = _monai_distances(pred, gt, spacing)
    return row


@pytest.mark.filterwarnings("ignore:.*always_return_as_numpy:FutureWarning")
@pytest.mark.parametrize("kind", ["2d", "3d"])
def test_the_streaming_stage_gives_the_values_computed_independently_image_by_image(tmp_path, kind):
    arrays = _write_cases(tmp_path, kind)
    summary = _run(tmp_path, tmp_path / "out")
    spacing = (1.0, 1.0) if kind == "2d" else SPACING
    unit = "pixels" if kind == "2d" else "mm"
    suffix = "png" if kind == "2d" else "nii.gz"
    for subset in ("val", "test"):
        table = pd.read_csv(tmp_path / "out" / f"per_image_{subset}.csv", dtype={"image_id": str})
        assert table["image_id"].tolist() == sorted(arrays[subset])
        for row in table.itertuples():
            gt = np.asarray(read_mask(tmp_path / f"{row.image_id}_m.{suffix}").array)
            want = _expected_row(arrays[subset][row.image_id], gt, spacing, LOCKED["connectivity"])
            for column in ("gt_pixels", "pred_pixels", "n_ref_lesions", "n_pred_lesions", "presence_pred"):
                assert getattr(row, column) == want[column], (row.image_id, column)
            for column in ("dice", "recall"):
                assert getattr(row, column) == pytest.approx(want[column], nan_ok=True)
            # MONAI takes the 95th percentile in float32 (see test_surface.HD95_RTOL).
            assert row.hd95 == pytest.approx(want["hd95"], rel=1e-5, nan_ok=True)
            assert row.msd == pytest.approx(want["msd"], rel=1e-6, nan_ok=True)
            assert row.spacing == json.dumps(list(spacing)) and row.distance_unit == unit
        assert summary[subset]["distance_unit"] == unit


def test_nifti_sizes_are_reported_in_mm3_beside_voxels(tmp_path):
    _write_cases(tmp_path, "3d")
    _run(tmp_path, tmp_path / "out")
    voxel = SPACING[0] * SPACING[1] * SPACING[2]
    table = pd.read_csv(tmp_path / "out" / "per_image_test.csv", dtype={"image_id": str})
    np.testing.assert_allclose(table["gt_volume_mm3"], table["gt_pixels"] * voxel)
    np.testing.assert_allclose(table["pred_volume_mm3"], table["pred_pixels"] * voxel)
    lesions = pd.read_csv(tmp_path / "out" / "lesions_test.csv", dtype={"image_id": str})
    np.testing.assert_allclose(lesions["volume_mm3"], lesions["size"] * voxel)
    assert lesions.groupby("image_id")["size"].sum().to_dict() == {
        i: n for i, n in zip(table["image_id"], table["gt_pixels"], strict=True) if n
    }


def test_pictures_have_pixel_distances_and_no_mm3_sizes(tmp_path):
    _write_cases(tmp_path, "2d")
    summary = _run(tmp_path, tmp_path / "out")
    table = pd.read_csv(tmp_path / "out" / "per_image_val.csv", dtype={"image_id": str})
    assert table["gt_volume_mm3"].isna().all() and table["pred_volume_mm3"].isna().all()
    assert summary["val"]["distance_unit"] == "pixels" and "detection_by_size_mm3" not in summary["val"]
    assert "distance_unit" in summary["conventions"]["hd95"]


def test_size_bins_mm3_add_a_detection_breakdown_by_volume(tmp_path):
    _write_cases(tmp_path, "3d")
    summary = _run(tmp_path, tmp_path / "out", settings={"size_bins_mm3": [20, 100]})
    lesions = pd.read_csv(tmp_path / "out" / "lesions_test.csv", dtype={"image_id": str})
    rows = summary["test"]["detection_by_size_mm3"]
    assert [r["size_bin"] for r in rows] == ["<20", "20 to <100", ">=100"]
    volume = lesions["volume_mm3"]
    expected = [(volume < 20), (volume >= 20) & (volume < 100), (volume >= 100)]
    assert [r["n_lesions"] for r in rows] == [int(m.sum()) for m in expected]
    for row, members in zip(rows, expected, strict=True):
        if members.any():
            assert row["rate"] == pytest.approx(lesions.loc[members, "detected"].mean())
    assert summary["settings"]["size_bins_mm3"] == [20, 100]


def test_size_bins_mm3_of_pictures_are_null_with_the_reason(tmp_path):
    _write_cases(tmp_path, "2d")
    summary = _run(tmp_path, tmp_path / "out", settings={"size_bins_mm3": [20, 100]})
    assert summary["test"]["detection_by_size_mm3"] is None
    assert "in pixels, not mm" in summary["test"]["detection_by_size_mm3_reason"]
    assert [r["size_bin"] for r in summary["test"]["detection_by_size"]] == ["<50", "50-499", ">=500"]


@pytest.mark.parametrize("edges", [[100, 20], [0, 5], "10", [True]])
def test_bad_size_bins_mm3_name_the_key(tmp_path, edges):
    _write_cases(tmp_path, "3d")
    with pytest.raises(LesionflowError, match=r"evaluate\.size_bins_mm3"):
        _run(tmp_path, tmp_path / "out", settings={"size_bins_mm3": edges})


class LiveArrays:
    """Hands arrays out and records, each time, how many it handed out earlier are still alive."""

    def __init__(self):
        self.refs, self.most_alive = [], 0

    def hand_out(self, array):
        self.most_alive = max(self.most_alive, sum(ref() is not None for ref in self.refs))
        self.refs.append(weakref.ref(array))
        return array


def spy_on_reads(monkeypatch, module):
    """Count live maps and masks while ``module`` (evaluate or tune) reads them."""
    maps, masks = LiveArrays(), LiveArrays()
    real_open, real_read = artifacts.open_arrays, tune.read_manifest_mask

    @contextlib.contextmanager
    def open_arrays(path):
        with real_open(path) as lazy:
            yield SpyMapping(lazy, maps)

    def read_manifest_mask(row):
        loaded = real_read(row)
        masks.hand_out(loaded.array)
        return loaded

    monkeypatch.setattr(module, "open_arrays", open_arrays)
    monkeypatch.setattr(tune, "read_manifest_mask", read_manifest_mask)
    return maps, masks


class SpyMapping(Mapping):
    def __init__(self, lazy, live):
        self.lazy, self.live = lazy, live

    def __getitem__(self, key):
        return self.live.hand_out(self.lazy[key])

    def __iter__(self):
        return iter(self.lazy)

    def __len__(self):
        return len(self.lazy)


@pytest.mark.parametrize("kind", ["2d", "3d"])
def test_evaluate_holds_at_most_the_previous_map_and_mask_when_it_reads_the_next(tmp_path, monkeypatch, kind):
    _write_cases(tmp_path, kind)
    maps, masks = spy_on_reads(monkeypatch, evaluate)
    _run(tmp_path, tmp_path / "out")
    # Three maps and masks per subset, each read once; the one before may still be bound to a
    # loop variable, none earlier.
    assert len(maps.refs) == len(masks.refs) == 6
    assert maps.most_alive <= 1 and masks.most_alive <= 1


def test_a_mask_whose_shape_differs_from_its_map_is_named_with_both_shapes(tmp_path):
    arrays = _write_cases(tmp_path, "3d")
    save_arrays(tmp_path / "test.npz", {**arrays["test"], "0001_1": np.zeros((12, 14, 9), np.float16)})
    message = (
        r"mask .*0001_1_m\.nii\.gz of image 0001_1 has shape \(12, 14, 10\), "
        r"its probability map has shape \(12, 14, 9\)"
    )
    with pytest.raises(LesionflowError, match=message):
        _run(tmp_path, tmp_path / "out")


def test_an_image_id_missing_from_the_manifest_is_named(tmp_path):
    _write_cases(tmp_path, "3d")
    manifest = pd.read_csv(tmp_path / "manifest.csv", dtype=str)
    manifest[manifest["image_id"] != "0002_1"].to_csv(tmp_path / "manifest.csv", index=False)
    with pytest.raises(LesionflowError, match=r"manifest .* has no rows for image ids \['0002_1'\]"):
        _run(tmp_path, tmp_path / "out")
