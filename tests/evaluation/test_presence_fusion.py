"""A dual-head run's presence fusion through the tune and evaluate stages: gamma chosen on validation,
applied as locked, every source's ROC-AUC and AP side by side."""

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from sklearn.metrics import roc_auc_score

from lesionflow.evaluation.evaluate import run_evaluate
from lesionflow.evaluation.presence_fusion import classifier_logits
from lesionflow.evaluation.tune import run_tune
from lesionflow.pipeline.artifacts import save_arrays
from lesionflow.pipeline.config import complete_run_section
from lesionflow.pipeline.errors import LesionflowError

SIZE = 12


def write_run(folder, classifier=True):
    """16 images, 8 val and 8 test, half with a lesion. The maps say little (a faint blob on every
    image); the classifier's logits say which images hold a lesion, with one mistake per subset."""
    rng = np.random.default_rng(0)
    rows, split_rows, maps, presence = [], [], {"val": {}, "test": {}}, {"val": [], "test": []}
    for i in range(16):
        subset, positive = ("val" if i < 8 else "test"), i % 2 == 0
        image_id = f"{i:04d}"
        mask = np.zeros((SIZE, SIZE), dtype=bool)
        prob = np.full((SIZE, SIZE), 0.05, dtype=np.float32)
        prob[2:5, 2:5] = rng.uniform(0.5, 0.7)  # a blob whether or not there is a lesion
        if positive:
            mask[2:5, 2:5] = True
        Image.fromarray(np.zeros((SIZE, SIZE), np.uint8)).save(folder / f"{image_id}.png")
        Image.fromarray(mask.astype(np.uint8) * 255).save(folder / f"{image_id}_m.png")
        rows.append({"image": f"{image_id}.png", "mask": f"{image_id}_m.png", "subject": image_id})
        split_rows.append({"image_id": image_id, "subject": image_id, "split": subset})
        maps[subset][image_id] = prob.astype(np.float16)
        wrong = i in (2, 11)
        logit = (2.0 if positive != wrong else -2.0) if classifier else np.nan
        presence[subset].append({"image_id": image_id, "presence_logit": logit,
                                 "presence_probability": 1 / (1 + np.exp(-logit))})  # fmt: skip
    pd.DataFrame(rows).to_csv(folder / "manifest.csv", index=False)
    pd.DataFrame(split_rows).to_csv(folder / "split.csv", index=False)
    for subset in ("val", "test"):
        save_arrays(folder / f"{subset}.npz", maps[subset])
        pd.DataFrame(presence[subset]).to_csv(folder / f"{subset}_presence.csv", index=False)
    return folder


def tuned_and_evaluated(folder):
    tune = complete_run_section("tune", {"thresholds": [0.3], "min_lesion_areas": [0]})
    run_tune(folder / "manifest.csv", folder / "split.csv", folder / "val.npz", {"tune": tune}, folder,
             folder / "val_presence.csv")  # fmt: skip
    presence = {"fusion": folder / "fusion.json", "val": folder / "val_presence.csv",
                "test": folder / "test_presence.csv"}  # fmt: skip
    summary = run_evaluate(
        folder / "manifest.csv", folder / "split.csv", folder / "val.npz", folder / "test.npz",
        folder / "locked.json", complete_run_section("evaluate", {"bootstrap": {"n_resamples": 50}}),
        folder / "out", presence=presence,
    )  # fmt: skip
    return json.loads((folder / "fusion.json").read_text()), summary


def test_gamma_is_chosen_on_validation_and_the_ranked_presence_is_the_fused_score(tmp_path):
    fusion, summary = tuned_and_evaluated(write_run(tmp_path))
    assert fusion["chosen_on"] == "validation" and fusion["gamma"] > 0.5  # the classifier knows more
    per_image = pd.read_csv(tmp_path / "out" / "per_image_test.csv", dtype={"image_id": str})
    expected = fusion["gamma"] * per_image["presence_classifier"] + (1 - fusion["gamma"]) * per_image[
        "presence_segmentation"
    ]
    assert per_image["presence_score"].to_numpy() == pytest.approx(expected.to_numpy())
    truth = per_image["gt_pixels"] > 0
    by_source = summary["test"]["presence_by_source"]
    # The ranked presence is the fused score's.
    assert summary["test"]["presence_roc_auc"] == pytest.approx(by_source["fused"]["roc_auc"])
    assert set(by_source) >= {"max_probability", "lesion_area", "classifier", "segmentation", "fused"}
    classifier = roc_auc_score(truth, per_image["presence_classifier"])
    assert by_source["classifier"]["roc_auc"] == pytest.approx(classifier)
    assert by_source["fused"]["roc_auc"] == pytest.approx(roc_auc_score(truth, per_image["presence_score"]))
    assert summary["fusion"]["gamma"] == fusion["gamma"]


def test_without_a_classifier_no_gamma_is_locked_and_presence_is_as_tuning_chose_it(tmp_path):
    fusion, summary = tuned_and_evaluated(write_run(tmp_path, classifier=False))
    assert fusion["gamma"] is None or np.isnan(fusion["gamma"])
    assert "no classifier" in fusion["reason"]
    per_image = pd.read_csv(tmp_path / "out" / "per_image_test.csv")
    assert "presence_classifier" not in per_image and "presence_by_source" not in summary["test"]


def test_a_classifier_that_scored_only_some_images_is_refused(tmp_path):
    table = pd.DataFrame({"image_id": ["a", "b"], "presence_logit": [1.0, np.nan]})
    table.to_csv(tmp_path / "p.csv", index=False)
    with pytest.raises(LesionflowError, match="scored only some images"):
        classifier_logits(tmp_path / "p.csv", ["a", "b"])
    with pytest.raises(LesionflowError, match=r"lacks the image ids \['c'\]"):
        classifier_logits(tmp_path / "p.csv", ["a", "c"])
