"""Tests of lesionflow.reports.data_report: images, subjects and lesions per split, subjects
shared between splits, and lesion sizes of volumes in mL (pictures keep pixels)."""

import pandas as pd
import pytest

from lesionflow.pipeline.errors import LesionflowError
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


# ---------------------------------------------------------------- volumes in mL


def volume_tables(spacing):
    """The data report's tables for three images with the given spacing cell; a lesion of 4, 6
    and 4 voxels, and a lesion-free image."""
    images = pd.DataFrame({
        "image_id": ["a", "b", "c"], "subject": ["s1", "s2", "s3"], "spacing": spacing,
        "lesion_pixels": [4, 10, 0], "lesion_fraction": [4 / 64, 10 / 64, 0], "n_lesions": [1, 2, 0],
    })  # fmt: skip
    lesions = pd.DataFrame({"image_id": ["a", "b", "b"], "subject": ["s1", "s2", "s2"],
                            "lesion_pixels": [4, 6, 4]})  # fmt: skip
    split = pd.DataFrame({"image_id": ["a", "b", "c"], "subject": ["s1", "s2", "s3"], "split": "test"})
    return images, lesions, split


def test_volume_lesion_sizes_are_in_millilitres_voxels_times_voxel_volume():
    images, lesions, split = volume_tables("[1.0, 1.0, 2.0]")  # 2 mm³ per voxel
    per_image, per_lesion, unit = data_report.lesion_sizes(images, lesions)
    assert unit.unit == "mL"
    assert per_image.tolist() == pytest.approx([0.008, 0.020, 0.0])
    assert per_lesion.tolist() == pytest.approx([0.008, 0.012, 0.008])
    table = data_report.data_report_table(images, lesions, split).set_index("split")
    assert table.loc["test", "median lesion size (mL)"] == "0.008"
    assert table.loc["test", "median lesion volume (positive images, mL)"] == "0.014"
    fig = data_report.plot_data_report(images, lesions, split)
    assert fig.get_axes()[3].get_ylabel() == "mL per lesion"
    assert "Lesion-voxel fraction" in fig.get_axes()[1].get_title()


def test_pictures_keep_pixels_and_the_same_table_with_or_without_a_spacing_column():
    images, lesions, split = volume_tables("[1.0, 1.0]")
    with_spacing = data_report.data_report_table(images, lesions, split)
    without = data_report.data_report_table(images.drop(columns="spacing"), lesions, split)
    assert with_spacing.equals(without)
    assert with_spacing.loc[0, "median lesion size (pixels)"] == "4.0"
    size_axis = data_report.plot_data_report(images, lesions, split).get_axes()[3]
    assert size_axis.get_ylabel() == "pixels per lesion"


def test_spacing_cells_that_mix_pictures_and_volumes_or_are_not_lists_are_refused():
    images, lesions, _ = volume_tables(["[1.0, 1.0]", "[1.0, 1.0, 2.0]", "[1.0, 1.0, 2.0]"])
    with pytest.raises(LesionflowError, match=r"images.csv, column 'spacing': mixes images with 2 and 3"):
        data_report.lesion_sizes(images, lesions)
    images, lesions, _ = volume_tables("1.0 x 1.0")
    with pytest.raises(LesionflowError, match=r"images.csv, column 'spacing': expected a list"):
        data_report.lesion_sizes(images, lesions)


def per_image_table(spacing, **columns):
    return pd.DataFrame({"image_id": ["a", "b"], "dice": [0.5, 0.0], "gt_pixels": [100, 0],
                         "pred_pixels": [80, 3], "spacing": spacing, **columns})  # fmt: skip


def test_per_image_tables_of_volumes_give_reference_and_predicted_volumes_in_millilitres():
    # The evaluate stage's mm³, in their place, when the table has them ...
    measured = per_image_table(
        "[0.5, 0.5, 4.0]", gt_volume_mm3=[100.0, 0.0], pred_volume_mm3=[80.0, 3.0], distance_unit="mm"
    )
    table = data_report.with_lesion_volume(measured, "per_image_test.csv")
    assert list(table.columns) == [
        "image_id", "dice", "gt_pixels", "pred_pixels", "spacing", "gt_volume_ml", "pred_volume_ml",
        "distance_unit",
    ]  # fmt: skip
    assert table["gt_volume_ml"].tolist() == [0.1, 0.0] and table["pred_volume_ml"].tolist() == [0.08, 0.003]
    # ... else voxels x voxel volume (1 mm³ here), the same numbers.
    computed = data_report.with_lesion_volume(per_image_table("[0.5, 0.5, 4.0]"), "per_image_test.csv")
    assert computed["gt_volume_ml"].tolist() == pytest.approx([0.1, 0.0])
    assert computed["pred_volume_ml"].tolist() == pytest.approx([0.08, 0.003])


def test_per_image_tables_of_pictures_or_without_spacing_are_unchanged():
    pictures = per_image_table("[1.0, 1.0]", gt_volume_mm3=float("nan"), pred_volume_mm3=float("nan"))
    assert data_report.with_lesion_volume(pictures, "per_image_test.csv") is pictures
    bare = per_image_table("[1.0, 1.0, 1.0]").drop(columns="spacing")
    assert data_report.with_lesion_volume(bare, "per_image_test.csv") is bare
