"""Tests of lesionflow.reports.data_report: images, subjects and lesions per split, and subjects
shared between splits."""

import pandas as pd
import pytest

from lesionflow.reports import data_report


def test_split_table_adds_total_and_overlap_finds_shared_subjects():
    summary = pd.DataFrame(
        {"split": ["test", "train", "val"], "n": [2, 6, 2], "lesion_positive": [1, 3, 2]}
    )
    table = data_report.split_table(summary)
    assert list(table["split"]) == ["train", "val", "test", "all"]
    assert table.iloc[-1][["n", "lesion_positive", "lesion_free"]].tolist() == [10, 6, 4]
    assert table.iloc[-1]["lesion_rate"] == pytest.approx(0.6)
    split = pd.DataFrame(
        {
            "image_id": ["a", "b", "c"],
            "subject": ["s1", "s1", "s2"],
            "split": ["train", "val", "test"],
        }
    )
    overlap = data_report.subject_overlap(split).set_index("splits")
    assert overlap.loc["train / val", "shared_subjects"] == 1
    assert overlap.loc["train / test", "shared_subjects"] == 0


def test_data_report_counts_images_subjects_and_lesions_per_split():
    images = pd.DataFrame({
        "image_id": ["a", "b", "c", "d"], "subject": ["s1", "s1", "s2", "s3"],
        "height": 8, "width": 8, "lesion_pixels": [4, 0, 10, 2],
        "lesion_fraction": [4 / 64, 0, 10 / 64, 2 / 64], "n_lesions": [1, 0, 2, 1],
    })  # fmt: skip
    lesions = pd.DataFrame({"image_id": ["a", "c", "c", "d"], "subject": ["s1", "s2", "s2", "s3"],
                            "lesion_pixels": [4, 6, 4, 2]})  # fmt: skip
    split = pd.DataFrame({"image_id": ["a", "b", "c", "d"], "subject": ["s1", "s1", "s2", "s3"],
                          "split": ["train", "train", "val", "test"]})  # fmt: skip
    table = data_report.data_report_table(images, lesions, split).set_index("split")
    assert list(table.index) == ["train", "val", "test"]
    assert table.loc["train", "images"] == 2 and table.loc["train", "images per subject (max)"] == 2
    assert table.loc["train", "lesion-positive images"] == 1 and table.loc["val", "lesions"] == 2
    assert table.loc["val", "median lesion size (pixels)"] == "5.0"
    fig = data_report.plot_data_report(images, lesions, split)
    assert len(fig.get_axes()) == 4 and "1 lesion-free" in fig.get_axes()[1].get_title()


def test_split_figure_labels_each_bar_with_its_number_and_says_how_the_split_was_made():
    summary = pd.DataFrame(
        {"split": ["train", "val", "test"], "n": [6, 2, 2], "lesion_positive": [3, 2, 1]}
    )
    figure = data_report.plot_split(summary)
    counts, positives, rates = figure.get_axes()
    assert [text.get_text() for text in counts.texts] == ["6", "2", "2"]
    assert [text.get_text() for text in positives.texts] == ["3", "2", "1"]
    assert [text.get_text() for text in rates.texts] == ["0.50", "1.00", "0.50"]
    assert "grouped by subject" in figure.get_suptitle()
