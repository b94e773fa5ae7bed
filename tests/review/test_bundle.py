"""Tests of lesionflow.review.bundle and bundle_predict: an exported run's predict.py gives its locked masks.

Tiny segmentation runs are made in-process by the stages' own entry functions, keyed and set up by
the plan exactly as Snakemake would run them.
"""

import json
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from codebase import REPO_CODE
from PIL import Image

from lesionflow.data.dataset import run_data
from lesionflow.data.preprocess import run_preprocess
from lesionflow.data.split import run_split
from lesionflow.evaluation.evaluate import run_evaluate
from lesionflow.evaluation.export import run_export
from lesionflow.evaluation.tune import run_tune
from lesionflow.io.readers import read_mask
from lesionflow.model.infer import load_model, run_infer
from lesionflow.model.networks import segmentation_network
from lesionflow.model.train import run_train
from lesionflow.pipeline.artifacts import load_arrays, read_json
from lesionflow.pipeline.config import resolve_config
from lesionflow.pipeline.errors import LesionflowError
from lesionflow.pipeline.plan import build_plan
from lesionflow.review import bundle as bundle_module
from lesionflow.review.bundle import TORCHSCRIPT_FILE, export_bundle, scripted_network
from lesionflow.review.bundle_predict import (
    input_files,
    predict_files,
    probability_maps,
    read_bundle,
)

TINY_MODEL = {"network": "UNet", "kwargs": {"channels": [8, 16], "strides": [2]}}
TINY_TRAIN = {"epochs": 1, "batch_size": 8, "early_stopping_patience": None}
TINY_TUNE = {"thresholds": [0.3, 0.5], "min_lesion_areas": [0, 4]}
# Everything preprocess can do to a picture, so predict must repeat each step and map back.
PREPARED = {
    "crop_field_of_view": True,
    "max_size": 48,
    "normalise": "image",
    "tile_size": 32,
    "tile_stride": 16,
}


def tiny_run(**sections) -> dict:
    """One epoch of a very small UNet, with ``sections`` (infer, preprocess, ...) merged in."""
    run = {"model": TINY_MODEL, "train": TINY_TRAIN, "tune": TINY_TUNE}
    for section, values in sections.items():
        run[section] = {**run.get(section, {}), **values}
    return run


def finish_run(f: dict, s: dict) -> None:
    """Run each stage of one run up to export, given its stage folders ``f`` and job settings ``s``.

    A stage whose folder exists is skipped: runs of one config share their data and split.
    """
    manifest, split = f["data"] / "manifest.csv", f["split"] / "split.csv"
    maps = {subset: f["infer"] / f"{subset}.npz" for subset in ("val", "test")}
    locked = f["tune"] / "locked.json"
    if not f["data"].exists():
        run_data(s["data"], f["data"])
    if not f["split"].exists():
        run_split(manifest, s["split"], f["split"])
    run_preprocess(manifest, split, s["preprocess"], f["preprocess"])
    run_train(f["preprocess"] / "manifest.csv", f["preprocess"] / "split.csv", s["train"], f["train"])
    for subset in maps:
        run_infer(
            f["preprocess"] / "images.csv", f["preprocess"] / "preprocess.json", f["train"] / "model.pt",
            s["infer"], subset, f["infer"],
        )  # fmt: skip
    run_tune(manifest, split, maps["val"], s["tune"], f["tune"], f["infer"] / "val_presence.csv")
    run_evaluate(manifest, split, maps["val"], maps["test"], locked, s["evaluate"], f["evaluate"])
    run_export(manifest, maps, locked, f["export"])


def finished_runs(workdir: Path, config: dict) -> tuple[dict, dict]:
    """Every run of ``config`` finished up to export; each run's stage folders and job settings."""
    plan = build_plan(resolve_config(config), workdir, REPO_CODE)
    folders, settings = {}, {}
    for name, keys in plan.runs.items():
        folders[name] = {stage: workdir / folder for stage, folder in plan.run_folders(name).items()}
        settings[name] = {stage: plan.job(stage, key).settings for stage, key in keys.items()}
        finish_run(folders[name], settings[name])
    return folders, settings


@pytest.fixture(scope="module")
def one_thread():
    """Torch on one thread while the tiny runs train and predict, as their jobs' threads: 1 would."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def pictures(tmp_path_factory, one_thread):
    """Two finished 2D runs on one synthetic fundus dataset, and their bundles."""
    workdir = tmp_path_factory.mktemp("pictures")
    config = {
        "data": {"source": "synthetic", "synthetic": {"n_images": 36, "image_size": 64, "seed": 3}},
        "split": {"train": 0.5, "val": 0.25, "test": 0.25, "seed": 0},
        "runs": {
            "unet": tiny_run(infer={"tta": ["identity", "hflip"]}),
            "prepared": tiny_run(infer={"tta": ["identity", "rot90"], "batch_size": 3}, preprocess=PREPARED),
        },
    }
    folders, settings = finished_runs(workdir, config)
    # The provenance stage records are written by the pipeline; one stands in for them here.
    (folders["unet"]["tune"] / "provenance.json").write_text(json.dumps({"stage": "tune"}))
    bundles = {
        name: export_bundle(folders[name], name, workdir / "bundles" / name, settings[name])
        for name in folders
    }
    return workdir, folders, settings, bundles


def export_records(folders: dict, subset: str = "test") -> list[dict]:
    """The export stage's records (source, mask) of ``subset``."""
    return read_json(folders["export"] / "export.json")["files"][subset]


def test_bundle_predict_py_reproduces_the_export_stages_locked_test_masks_exactly(pictures, tmp_path):
    _, folders, _, bundles = pictures
    records = export_records(folders["unet"])
    command = [
        sys.executable, str(bundles["unet"] / "predict.py"), *[r["source"] for r in records],
        "--out", str(tmp_path / "masks"), "--device", "cpu",
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in (tmp_path / "masks").iterdir()) == sorted(
        Path(r["mask"]).name for r in records
    )
    for record in records:
        predicted = tmp_path / "masks" / Path(record["mask"]).name
        with Image.open(predicted) as ours, Image.open(record["mask"]) as theirs:
            assert (ours.format, ours.size, ours.mode) == (theirs.format, theirs.size, theirs.mode)
        assert np.array_equal(read_mask(predicted).array, read_mask(record["mask"]).array)
    # Not a vacuous match: some test masks have lesions and some are empty.
    assert 0 < sum(read_mask(r["mask"]).array.any() for r in records) < len(records)


def test_bundle_maps_equal_the_infer_stages_with_crop_resize_normalise_tiles_and_rot90(pictures, tmp_path):
    _, folders, _, bundles = pictures
    bundle = read_bundle(bundles["prepared"], "cpu")
    assert not bundle.record["preprocess"]["identity"]
    records = export_records(folders["prepared"])
    stored = load_arrays(folders["prepared"]["infer"] / "test.npz")
    sources = [Path(record["source"]) for record in records]
    maps = list(probability_maps(bundle, sources))
    assert [source for source, _ in maps] == sources
    for record, (_, probability) in zip(records, maps, strict=True):
        assert np.array_equal(probability, stored[record["image_id"]].astype(np.float32))
    written = predict_files(bundles["prepared"], [r["source"] for r in records], tmp_path, "cpu")
    for path, record in zip(written, records, strict=True):
        assert path.name == Path(record["mask"]).name
        assert np.array_equal(read_mask(path).array, read_mask(record["mask"]).array)


def test_bundle_records_settings_locked_postprocessing_metrics_and_provenance(pictures):
    _, folders, settings, bundles = pictures
    folder, run = bundles["unet"], folders["unet"]
    record = read_json(folder / "bundle.json")
    assert record["run"] == "unet"
    assert record["preprocess"]["settings"] == read_json(run["preprocess"] / "preprocess.json")["settings"]
    assert record["infer"]["tta"] == ["identity", "hflip"]
    assert record["infer"]["sw_overlap"] == settings["unet"]["infer"]["infer"]["sw_overlap"]
    locked = read_json(run["tune"] / "locked.json")
    assert record["postprocess"] == locked == read_json(folder / "locked.json")
    assert read_json(folder / "metrics.json") == read_json(run["evaluate"] / "summary.json")
    assert "dice_pos_ci_low" in read_json(folder / "metrics.json")["test"]
    assert sorted(p.name for p in (folder / "provenance").iterdir()) == ["tune.json"]
    assert (folder / "model.pt").read_bytes() == (run["train"] / "model.pt").read_bytes()
    assert "python predict.py IMAGE_OR_FOLDER... --out DIR" in (folder / "README.md").read_text()


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.jit.load, deprecated in recent torch
def test_torchscript_network_gives_the_state_dict_models_logits(pictures):
    _, _, _, bundles = pictures
    model, checkpoint = load_model(bundles["unet"] / "model.pt", torch.device("cpu"))
    scripted = torch.jit.load(str(bundles["unet"] / TORCHSCRIPT_FILE))
    # A batch of another size than the training patch: the scripted network is not tied to it.
    x = torch.rand(2, checkpoint["in_channels"], 48, 80, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = segmentation_network(model)(x)
        assert torch.allclose(scripted(x), expected, atol=1e-5)


def test_export_refuses_a_non_empty_out_in_one_line_and_leaves_it_alone(pictures, tmp_path):
    _, folders, settings, _ = pictures
    out = tmp_path / "taken"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(LesionflowError, match="is not an empty folder") as caught:
        export_bundle(folders["unet"], "unet", out, settings["unet"])
    assert "\n" not in str(caught.value) and str(out) in str(caught.value)
    assert [p.name for p in tmp_path.iterdir()] == ["taken"]
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


def test_export_into_an_existing_empty_folder_fills_it(pictures, tmp_path):
    _, folders, settings, _ = pictures
    out = export_bundle(folders["unet"], "unet", tmp_path / "empty", settings["unet"])
    assert (out / "predict.py").is_file() and [p.name for p in tmp_path.iterdir()] == ["empty"]


def test_export_names_the_missing_artifact_or_stage_and_writes_nothing(pictures, tmp_path):
    _, folders, settings, _ = pictures
    untuned = {**folders["unet"], "tune": tmp_path / "results" / "tune" / "abc"}
    with pytest.raises(LesionflowError, match=r"results/tune/abc/locked\.json does not exist"):
        export_bundle(untuned, "unet", tmp_path / "out", settings["unet"])
    external = {stage: folder for stage, folder in folders["unet"].items() if stage != "train"}
    with pytest.raises(LesionflowError, match="run unet has no train stage"):
        export_bundle(external, "unet", tmp_path / "out", settings["unet"])
    assert not (tmp_path / "out").exists()


def test_export_refuses_settings_of_another_run(pictures, tmp_path):
    _, folders, settings, _ = pictures
    with pytest.raises(LesionflowError, match="infer.tta"):
        export_bundle(folders["unet"], "unet", tmp_path / "out", settings["prepared"])


def test_a_failed_export_leaves_no_half_bundle(pictures, tmp_path, monkeypatch):
    _, folders, settings, _ = pictures

    def broken(record):
        raise RuntimeError("disk full")

    monkeypatch.setattr(bundle_module, "readme_text", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        export_bundle(folders["unet"], "unet", tmp_path / "out", settings["unet"])
    assert list(tmp_path.iterdir()) == []


def test_predict_refuses_an_image_with_other_channels_naming_it(pictures, tmp_path):
    _, _, _, bundles = pictures
    grey = tmp_path / "grey.png"
    Image.fromarray(np.zeros((64, 64), dtype=np.uint8)).save(grey)
    with pytest.raises(LesionflowError, match=r"grey\.png: image of shape \(1, 64, 64\).*3 channel"):
        predict_files(bundles["unet"], [grey], tmp_path / "out", "cpu")


def test_input_files_expands_folders_to_their_images_sorted(tmp_path):
    for name in ("b.png", "a.nii.gz", "notes.txt"):
        (tmp_path / name).write_bytes(b"")
    assert input_files([tmp_path]) == [tmp_path / "a.nii.gz", tmp_path / "b.png"]
    with pytest.raises(LesionflowError, match="notes.txt: unsupported file suffix"):
        input_files([tmp_path / "notes.txt"])
    with pytest.raises(LesionflowError, match="missing.png: no such file"):
        input_files([tmp_path / "missing.png"])


class Unscriptable(torch.nn.Module):
    """A network whose forward takes keyword arguments, which TorchScript cannot compile."""

    def forward(self, x, **options):
        return x * 2


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")
def test_scripted_network_traces_what_torchscript_cannot_compile():
    example = torch.ones(1, 1, 4, 4)
    scripted, how = scripted_network(Unscriptable(), example)
    assert how == "trace"
    assert torch.equal(scripted(example), example * 2)


@pytest.fixture(scope="module")
def volumes(tmp_path_factory, one_thread):
    """A finished 3D run on tiny synthetic brain volumes (head crop, percentile, flips), and its bundle."""
    workdir = tmp_path_factory.mktemp("volumes")
    run = tiny_run(
        model={"spatial_dims": 3},
        preprocess={"crop_field_of_view": True, "normalise": "percentile"},
        train={"batch_size": 4, "patch_size": [16, 16, 8]},
        tune={"connectivity": 3},
        infer={"tta": ["identity", "flip2"]},
        evaluate={"size_bins": [10, 100], "size_bins_mm3": [20, 200]},
    )
    config = {
        "data": {
            "source": "synthetic",
            "synthetic": {"kind": "brain", "n_images": 12, "image_size": 32, "seed": 1},
        },
        "split": {"train": 0.5, "val": 0.25, "test": 0.25, "seed": 0},
        "runs": {"unet3d": run},
    }
    folders, settings = finished_runs(workdir, config)
    out = export_bundle(folders["unet3d"], "unet3d", workdir / "bundle", settings["unet3d"])
    return folders["unet3d"], out


def test_3d_bundle_writes_the_export_stages_nifti_masks_with_their_geometry(volumes, tmp_path):
    folders, bundle = volumes
    records = export_records(folders)
    written = predict_files(bundle, [r["source"] for r in records], tmp_path, "cpu")
    for path, record in zip(written, records, strict=True):
        assert path.name == Path(record["mask"]).name and path.name.endswith(".nii.gz")
        ours, theirs = nib.load(path), nib.load(record["mask"])
        assert np.array_equal(np.asarray(ours.dataobj), np.asarray(theirs.dataobj))
        assert np.array_equal(ours.affine, theirs.affine) and ours.shape == theirs.shape
    assert 0 < sum(np.asarray(nib.load(r["mask"]).dataobj).any() for r in records) < len(records)
