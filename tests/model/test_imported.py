"""An external run's predictions imported as the infer stage's files, one subset at a time."""

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from lesionflow.io.nnunet_predictions import write_nnunet_prediction
from lesionflow.io.prediction_folder import PredictionFolderProblems
from lesionflow.model.imported import run_import
from lesionflow.pipeline.artifacts import load_arrays
from lesionflow.pipeline.errors import LesionflowError

SUBSETS = {"a": "train", "b": "val", "c": "val", "d": "test", "e": "test"}
SHAPE = (12, 10)


@pytest.fixture
def tables(tmp_path):
    ids = list(SUBSETS)
    images = pd.DataFrame({"image_id": ids, "subject": ids, "shape": "[12, 10]"})
    split = pd.DataFrame({"image_id": ids, "subject": ids, "split": list(SUBSETS.values())})
    images.to_csv(tmp_path / "images.csv", index=False)
    split.to_csv(tmp_path / "split.csv", index=False)
    return tmp_path / "images.csv", tmp_path / "split.csv"


def probability(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).random(SHAPE).astype(np.float32)


def settings(folder) -> dict:
    return {"external": {"predictions": str(folder), "label": 1}}


def test_nnunet_probabilities_become_the_subsets_maps_and_the_other_subset_is_not_read(tmp_path, tables):
    folder = tmp_path / "nnunet"
    folder.mkdir()
    for seed, image_id in enumerate("bc"):
        write_nnunet_prediction(folder, image_id, probability(seed), 0.5, 2)
    # A test file that is broken: importing validation must neither read nor report it.
    (folder / "d.png").write_bytes(b"not a picture")
    record = run_import(*tables, settings(folder), "val", tmp_path / "out")
    maps = load_arrays(tmp_path / "out" / "val.npz")
    assert sorted(maps) == ["b", "c"] and record["kind"] == "probabilities"
    assert np.allclose(maps["b"], probability(0), atol=1e-3)
    assert sorted(load_arrays(tmp_path / "out" / "val_tiles.npz")) == ["b", "c"]
    presence = pd.read_csv(tmp_path / "out" / "val_presence.csv")
    assert list(presence["image_id"]) == ["b", "c"] and presence["presence_probability"].isna().all()
    written = json.loads((tmp_path / "out" / "val_infer.json").read_text())
    assert written["source"] == "external" and written["n_images"] == 2


def test_label_masks_only_are_imported_as_masks_and_said_so(tmp_path, tables):
    folder = tmp_path / "masks"
    folder.mkdir()
    for image_id in "de":
        Image.fromarray((probability(3) > 0.5).astype(np.uint8)).save(folder / f"{image_id}.png")
    record = run_import(*tables, settings(folder), "test", tmp_path / "out")
    assert record["kind"] == "masks"
    assert set(np.unique(load_arrays(tmp_path / "out" / "test.npz")["d"])) <= {0.0, 1.0}


def test_missing_and_misshapen_predictions_are_reported_together(tmp_path, tables):
    folder = tmp_path / "bad"
    folder.mkdir()
    Image.fromarray(np.zeros((5, 5), np.uint8)).save(folder / "b.png")
    with pytest.raises(PredictionFolderProblems) as raised:
        run_import(*tables, settings(folder), "val", tmp_path / "out")
    lines = raised.value.lines
    assert lines[0].endswith("2 problems")
    assert any("'c'" in line for line in lines) and any("b.png" in line for line in lines)
    assert not (tmp_path / "out" / "val.npz").exists()


def test_a_subset_other_than_val_or_test_is_refused(tmp_path, tables):
    with pytest.raises(LesionflowError, match="subset"):
        run_import(*tables, settings(tmp_path), "train", tmp_path / "out")
