"""Tests of lesionflow.model.score_infer: per-transform raw outputs, their mean, padding, refused TTA."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

from lesionflow.model.regressors import build_regressor, fit_to_roi
from lesionflow.model.score_infer import load_regressor, run_score_infer
from lesionflow.pipeline import artifacts
from lesionflow.pipeline.errors import LesionflowError

MODEL_SETTINGS = {"network": "ResNet10", "spatial_dims": 3, "kwargs": {"widen_factor": 0.125}}
ROI = [12, 16, 10]
FLIPS = ["identity", "flip0", "flip1", "flip2", "flip012"]


def save_model(path, model_settings=MODEL_SETTINGS, roi=ROI, seed=0):
    """A randomly initialised regressor saved as the train stage saves it."""
    torch.manual_seed(seed)
    model = build_regressor(model_settings, in_channels=1)
    torch.save(
        {
            "state_dict": model.state_dict(), "model_settings": model_settings, "task": "regression",
            "in_channels": 1, "out_channels": 1, "spatial_dims": model_settings["spatial_dims"],
            "patch_size": roi, "roi_size": roi, "best_epoch": 1,
        },
        path,
    )
    return path


@pytest.fixture(scope="module")
def stage(tmp_path_factory):
    """Preprocessed volumes of several shapes (val and test), their images.csv, preprocess.json, model."""
    root = tmp_path_factory.mktemp("score_infer")
    rng = np.random.default_rng(0)
    shapes = [(12, 16, 10), (14, 18, 8), (10, 16, 10), (12, 16, 10), (9, 20, 11)]
    rows = []
    for i, shape in enumerate(shapes):
        np.save(root / f"v{i}.npy", rng.normal(size=(1, *shape)).astype(np.float32))
        rows.append({
            "image_id": f"v{i}", "subject": f"s{i // 2}", "split": "val" if i < 3 else "test",
            "image": str(root / f"v{i}.npy"), "score": float(i), "visit": str(1 + i % 2),
        })
    # A flip-invariant volume: mirrored along axis 0, so flip0 shows the network the same input.
    mirrored = rng.normal(size=(1, 6, 16, 10)).astype(np.float32)
    np.save(root / "sym.npy", np.concatenate([mirrored, mirrored[:, ::-1]], axis=1))
    rows.append({"image_id": "sym", "subject": "s9", "split": "test", "image": str(root / "sym.npy"),
                 "score": 3.0, "visit": ""})
    pd.DataFrame(rows).to_csv(root / "images.csv", index=False)
    (root / "preprocess.json").write_text(json.dumps({"settings": {"tile_size": None}}))
    return root, save_model(root / "model.pt")


def infer(stage, subset="test", tta=FLIPS, out=None, images="images.csv", model=None):
    root, model_path = stage
    out = out or root / f"out_{subset}_{'_'.join(tta)}"
    run_score_infer(
        root / images, root / "preprocess.json", model or model_path,
        {"infer": {"tta": list(tta), "batch_size": 2, "device": "cpu"}}, subset, out,
    )
    return out


def test_scores_table_has_the_spec_columns_and_the_subsets_rows(stage):
    out = infer(stage, "val", ["identity", "flip1"])
    table = pd.read_csv(out / "val_scores.csv", dtype={"visit": str})
    assert list(table.columns) == [
        "image_id", "subject", "visit", "prediction", "prediction_identity", "prediction_flip1",
    ]
    assert table["image_id"].tolist() == ["v0", "v1", "v2"] and table["visit"].tolist() == ["1", "2", "1"]
    record = artifacts.read_json(out / "val_infer.json")
    assert record["n"] == 3 and record["tta"] == ["identity", "flip1"]
    assert record["settings"]["infer"]["tta"] == ["identity", "flip1"]


def test_prediction_is_the_mean_of_the_transforms_raw_outputs_on_the_fitted_volume(stage):
    root, model_path = stage
    table = pd.read_csv(infer(stage) / "test_scores.csv").set_index("image_id")
    columns = [f"prediction_{name}" for name in FLIPS]
    np.testing.assert_allclose(table["prediction"], table[columns].mean(axis=1), rtol=1e-12)
    model, _ = load_regressor(model_path, torch.device("cpu"))
    volume = torch.from_numpy(fit_to_roi(np.load(root / "v4.npy"), ROI))[None]
    with torch.no_grad():
        identity = float(model(volume))
        flipped = float(model(torch.flip(volume, dims=(2, 3, 4))))
    assert table.loc["v4", "prediction_identity"] == pytest.approx(identity, rel=1e-5)
    assert table.loc["v4", "prediction_flip012"] == pytest.approx(flipped, rel=1e-5)
    # The flips do change what a random network sees.
    assert table.loc["v4", "prediction_flip0"] != table.loc["v4", "prediction_identity"]


def test_a_mirror_flip_of_a_flip_invariant_volume_predicts_what_identity_does(stage):
    table = pd.read_csv(infer(stage, tta=["identity", "flip0"]) / "test_scores.csv").set_index("image_id")
    assert table.loc["sym", "prediction_flip0"] == table.loc["sym", "prediction_identity"]
    assert table.loc["sym", "prediction"] == table.loc["sym", "prediction_identity"]


def test_the_true_score_is_never_read(stage, tmp_path):
    root, _ = stage
    images = pd.read_csv(root / "images.csv")
    images["score"] = "not a score"
    images.to_csv(tmp_path / "garbled.csv", index=False)
    images.drop(columns=["score", "visit"]).to_csv(tmp_path / "without.csv", index=False)
    reference = pd.read_csv(infer(stage) / "test_scores.csv")
    for name in ("garbled.csv", "without.csv"):
        out = infer(stage, images=tmp_path / name, out=tmp_path / name.removesuffix(".csv"))
        table = pd.read_csv(out / "test_scores.csv")
        assert "score" not in table.columns
        pd.testing.assert_frame_equal(table.drop(columns="visit"), reference.drop(columns="visit"))
    assert table["visit"].isna().all()


@pytest.mark.parametrize("tta", [["rot90"], ["identity", "hflip"], ["rot180"], ["flip9"]])
def test_rotations_aliases_and_unknown_names_are_refused_naming_infer_tta(stage, tta):
    with pytest.raises(LesionflowError, match=r"infer\.tta"):
        infer(stage, tta=tta)


def test_a_flip_of_an_axis_the_model_lacks_names_infer_tta(stage, tmp_path):
    settings = {**MODEL_SETTINGS, "spatial_dims": 2}
    model = save_model(tmp_path / "model2d.pt", settings, roi=[16, 16])
    with pytest.raises(LesionflowError, match=r"infer\.tta.*flip2"):
        infer(stage, tta=["identity", "flip2"], model=model, out=tmp_path / "out")


def test_a_segmentation_checkpoint_is_refused(stage, tmp_path):
    segmentation = {"state_dict": {}, "model_settings": {}, "in_channels": 1, "spatial_dims": 3}
    torch.save(segmentation, tmp_path / "m.pt")
    with pytest.raises(LesionflowError, match="not a lesionflow regression checkpoint"):
        infer(stage, model=tmp_path / "m.pt", out=tmp_path / "out")
