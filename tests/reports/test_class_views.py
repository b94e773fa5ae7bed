"""Tests of the analysis notebook's class views: one view per class, stacked figures, the class table."""

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from lesionflow.reports.class_views import (
    CLASS_COLOURS,
    class_overlay,
    class_table,
    class_views,
    plot_class_forest,
    plot_confusion,
    stacked_figure,
)

SECTION = {"dice_pos": 0.7, "dice_pos_ci_low": 0.6, "dice_pos_ci_high": 0.8, "dice_pos_n": 12}
CLASS_SUMMARY = {
    "classes": ["exudate", "haemorrhage"],
    "test": {
        "classes": {"exudate": SECTION, "haemorrhage": {"dice_pos": None, "dice_pos_n": 0}},
        "macro": {**SECTION, "dice_pos_n_classes": 1, "dice_pos_classes": ["exudate"]},
    },
    "val": {"classes": {"exudate": {}, "haemorrhage": {}}},
}


def _figure() -> Figure:
    figure = Figure(figsize=(2, 1))
    figure.subplots().plot([0, 1])
    return figure


def test_a_binary_run_has_one_view_and_keeps_its_figures_as_they_are():
    views = class_views({"test": SECTION, "val": {}}, {"test": {"x": 1}})
    assert len(views) == 1 and views[0].heading == "" and views[0].channel is None
    table = pd.DataFrame({"image_id": ["a"], "dice": [0.5]})
    assert views[0].rows(table) is table
    figure = _figure()
    assert stacked_figure([figure], views) is figure


def test_a_run_of_several_classes_has_a_view_per_class_with_its_rows_channel_and_locked_settings():
    views = class_views(CLASS_SUMMARY)
    assert [view.name for view in views] == ["exudate", "haemorrhage"]
    assert views[1].heading == "### Class: haemorrhage" and views[1].colour == CLASS_COLOURS[1]
    table = pd.DataFrame({"class": ["exudate", "haemorrhage"], "image_id": ["a", "a"], "dice": [0.5, 0.1]})
    assert views[1].rows(table).to_dict("records") == [{"image_id": "a", "dice": 0.1}]
    assert views[1].channel_of(np.arange(6).reshape(2, 3)).tolist() == [3, 4, 5]
    locked = {"per_class": {"exudate": {"threshold": 0.3}, "haemorrhage": {"threshold": 0.6}}}
    assert views[1].locked(locked) == {"threshold": 0.6}
    stacked = stacked_figure([_figure(), _figure()], views)
    assert [ax.get_title(loc="left") for ax in stacked.axes] == ["exudate", "haemorrhage"]


def test_the_class_table_says_undefined_with_its_count_and_how_many_classes_the_macro_averages():
    table = class_table(CLASS_SUMMARY["test"])
    assert table.loc["dice_pos", "exudate"] == "0.7000 [0.6000, 0.8000] (n = 12)"
    assert table.loc["dice_pos", "haemorrhage"] == "undefined (n = 0)"
    assert table.loc["dice_pos", "macro mean"].endswith("over 1 class")
    plot_class_forest(CLASS_SUMMARY["test"])


def test_confusion_counts_are_written_in_and_overlays_take_each_class_colour():
    confusion = {
        kind: {"a": {"a": 9, "none": 1}, "none": {"a": 2, "none": 90}} for kind in ("pixels", "lesions")
    }
    figure = plot_confusion(confusion)
    texts = {text.get_text(): text.get_color() for text in figure.axes[0].texts}
    assert texts["90"] == "white" and texts["1"] == "black"
    stack = np.zeros((2, 2, 2), dtype=bool)
    stack[0, 0, 0] = stack[1, 1, 1] = True
    rgba = class_overlay(stack)
    assert rgba[0, 1, 3] == 0 and rgba[0, 0, 3] > 0 and not np.allclose(rgba[0, 0], rgba[1, 1])
