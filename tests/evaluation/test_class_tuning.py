import numpy as np
import pytest

from lesionflow.data.lesion_classes import lesion_classes
from lesionflow.evaluation.class_tuning import tune_classes
from lesionflow.evaluation.tune import tune_on_validation
from lesionflow.pipeline.errors import LesionflowError

SETTINGS = {"thresholds": [0.3, 0.5, 0.7], "min_lesion_areas": [0, 4], "objective": "dice_pos",
            "presence_score": "max_probability", "connectivity": 2}  # fmt: skip
CLASSES = lesion_classes({"mask_columns": {"exudate": "mask_exudate", "haemorrhage": "mask_haemorrhage"}})


def _validation(n=10, seed=0):
    """Two classes whose maps are calibrated differently: the haemorrhage channel runs low."""
    rng = np.random.default_rng(seed)
    items = []
    for i in range(n):
        ref = np.zeros((2, 16, 16), dtype=bool)
        if i % 3:
            ref[0, 2:6, 2:6] = True
        if i % 2:
            ref[1, 9:13, 9:14] = True
        # Exudate: background up to 0.6, lesions 0.75-0.95; haemorrhage: background under 0.25,
        # lesions 0.35-0.6.
        probs = np.stack([
            np.where(ref[0], rng.uniform(0.75, 0.95, ref[0].shape), rng.uniform(0, 0.6, ref[0].shape)),
            np.where(ref[1], rng.uniform(0.35, 0.6, ref[1].shape), rng.uniform(0, 0.25, ref[1].shape)),
        ])  # fmt: skip
        items.append((f"v{i}", probs.astype(np.float32), ref))
    return items


def test_each_class_is_locked_as_a_binary_tuning_of_its_channel_alone_would_lock_it():
    items = _validation()
    locked, grid = tune_classes(items, {"tune": SETTINGS}, CLASSES)
    for c, name in enumerate(CLASSES.names):
        alone, alone_grid = tune_on_validation(
            {i: p[c] for i, p, _ in items}, {i: r[c] for i, _, r in items}, {"tune": SETTINGS}
        )
        assert locked[name] == {**alone, "class": name}
        assert grid[grid["class"] == name].drop(columns="class").reset_index(drop=True).equals(alone_grid)
    # The low-running channel gets its own, lower threshold.
    assert locked["haemorrhage"]["threshold"] < locked["exudate"]["threshold"]
    assert all(entry["chosen_on"] == "validation" for entry in locked.values())


def test_a_class_that_no_validation_image_holds_names_the_class():
    items = [(i, p, np.stack([r[0], np.zeros_like(r[1])])) for i, p, r in _validation()]
    with pytest.raises(LesionflowError, match=r"^class haemorrhage: tune.objective 'dice_pos' is undefined"):
        tune_classes(items, {"tune": SETTINGS}, CLASSES)
