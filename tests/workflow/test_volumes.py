"""The whole pipeline on tiny generated brain volumes: 3D through every stage, geometry kept to export."""

import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from codebase import REPO_CODE

from lesionflow.data.axis_columns import read_axis_columns
from lesionflow.data.manifest import read_manifest
from lesionflow.io.readers import read_geometry
from lesionflow.pipeline.artifacts import load_arrays
from lesionflow.pipeline.config import resolve_config
from lesionflow.pipeline.plan import build_plan

from .pipeline import FIGURES, snakemake, tiny_run, write_config

pytestmark = pytest.mark.slow


def tiny_volume_run(**overrides) -> dict:
    """One epoch of a very small 3D UNet on 16 x 16 x 8 patches of head-cropped volumes."""
    run = tiny_run(
        model={"spatial_dims": 3},
        preprocess={"crop_field_of_view": True, "normalise": "percentile"},
        train={"batch_size": 4, "patch_size": [16, 16, 8]},
        tune={"connectivity": 3},
        evaluate={"size_bins": [10, 100], "size_bins_mm3": [20, 200]},
    )
    for section, values in overrides.items():
        run[section] = {**run.get(section, {}), **values}
    return run


@pytest.fixture(scope="module")
def volumes(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("volumes")
    config = {
        "data": {
            "source": "synthetic",
            "synthetic": {"kind": "brain", "n_images": 16, "image_size": 32, "seed": 1},
        },
        "split": {"train": 0.5, "val": 0.25, "test": 0.25, "seed": 0},
        "runs": {
            "unet3d": tiny_volume_run(),
            "mirror": tiny_volume_run(infer={"tta": ["identity", "flip2", "flip012"]}),
        },
    }
    write_config(workdir, config)
    snakemake(workdir)
    keys = build_plan(resolve_config(config), workdir, REPO_CODE).runs
    return workdir, keys


def test_the_data_stage_records_anisotropic_3d_spacing(volumes):
    workdir, keys = volumes
    images = read_axis_columns(pd.read_csv(workdir / f"results/data/{keys['unet3d']['data']}/images.csv"))
    assert all(len(shape) == 3 for shape in images["shape"])
    assert all(spacing[2] > spacing[0] == spacing[1] == 1.0 for spacing in images["spacing"])


def test_mirror_tta_reuses_the_training_and_maps_are_volumes_of_the_reference_shape(volumes):
    workdir, keys = volumes
    assert keys["mirror"]["train"] == keys["unet3d"]["train"] != keys["mirror"]["infer"]
    manifest = read_manifest(workdir / f"results/data/{keys['unet3d']['data']}/manifest.csv")
    shapes = {row.image_id: read_geometry(row.mask).shape for row in manifest.itertuples()}
    for name in ("unet3d", "mirror"):
        maps = load_arrays(workdir / f"results/infer/{keys[name]['infer']}/test.npz")
        assert maps and all(prob.shape == shapes[i] for i, prob in maps.items())
    record = json.loads((workdir / f"results/infer/{keys['mirror']['infer']}/test_infer.json").read_text())
    assert record["tta"] == ["identity", "flip2", "flip012"]


def test_evaluation_of_volumes_is_in_mm_and_mm3(volumes):
    workdir, keys = volumes
    folder = workdir / f"results/evaluate/{keys['unet3d']['evaluate']}"
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["test"]["distance_unit"] == "mm"
    assert summary["test"]["detection_by_size_mm3"] is not None
    per_image = pd.read_csv(folder / "per_image_test.csv")
    positive = per_image[per_image["gt_pixels"] > 0]
    voxel_mm3 = np.prod(json.loads(positive["spacing"].iloc[0]))
    assert positive["gt_volume_mm3"].iloc[0] == pytest.approx(positive["gt_pixels"].iloc[0] * voxel_mm3)


def test_exported_masks_lie_on_their_source_volumes(volumes):
    workdir, keys = volumes
    record = json.loads((workdir / f"results/export/{keys['unet3d']['export']}/export.json").read_text())
    assert record["counts"]["test"] > 0
    for entry in record["files"]["test"]:
        source, mask = nib.load(entry["source"]), nib.load(entry["mask"])
        assert mask.shape == source.shape and entry["mask"].endswith(".nii.gz")
        np.testing.assert_allclose(mask.affine, source.affine, atol=1e-6)
    # The generator stores volumes in scanner orientations: the export keeps each one's.
    orientations = {nib.aff2axcodes(nib.load(e["mask"]).affine) for e in record["files"]["test"]}
    assert orientations != {("R", "A", "S")}


def test_the_run_view_shows_volumes_as_slices_with_every_figure(volumes):
    workdir, _ = volumes
    view = workdir / "results/runs/unet3d"
    assert "axial" in (view / "analysis.html").read_text()
    figures = sorted(p.stem for p in (view / "figures").glob("*.png"))
    assert figures == sorted(FIGURES["analyse"] + FIGURES["training_report"])
    leaderboard = pd.read_csv(workdir / "results/compare/leaderboard.csv")
    assert sorted(leaderboard["run"]) == ["mirror", "unet3d"]
