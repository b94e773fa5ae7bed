"""Bad manifests (header, rows, encoding, paths, subjects, split, scores): one line naming the cell."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from manifests import NO_SCORES
from reliability.bad_input_files import (
    HEIGHT,
    SCORES,
    WIDTH,
    binary_mask,
    error_line,
    problem_lines,
    ramp,
    save_picture,
    subjects_manifest,
    where,
    write_manifest,
    write_pair,
)
from schema_settings import split_settings

from lesionflow.data.dataset import run_data
from lesionflow.data.manifest import read_manifest
from lesionflow.data.manifest_check import validate_manifest
from lesionflow.data.split import make_split

# ---------------------------------------------------------------- the manifest as a whole


def test_an_empty_manifest_says_it_is_empty_and_what_it_must_hold(tmp_path):
    manifest = write_manifest(tmp_path, "")
    expected = (
        f"manifest {manifest}: not a readable CSV file: it is empty; expected a header row naming the "
        "columns image, mask, subject, then one row per image"
    )
    assert error_line(validate_manifest, manifest) == expected
    assert error_line(read_manifest, manifest) == expected


def test_a_manifest_with_only_a_header_says_it_has_no_rows(tmp_path):
    manifest = write_manifest(tmp_path, "image,mask,subject\n")
    expected = f"manifest {manifest}: has a header but no rows; expected one row per image"
    assert error_line(validate_manifest, manifest) == expected


@pytest.mark.parametrize(
    ("header", "row", "missing", "found"),
    [
        ("image,subject", "images/a.png,s1", "'mask'", "image, subject"),
        ("Image,mask,subject", "images/a.png,masks/a.png,s1", "'image'", "Image, mask, subject"),
        ("img,mask,subject", "images/a.png,masks/a.png,s1", "'image'", "img, mask, subject"),
        # Excel's CSV in some locales: one column whose name holds all three.
        (
            "image;mask;subject",
            "images/a.png;masks/a.png;s1",
            "'image', 'mask', 'subject'",
            "image;mask;subject",
        ),
    ],
    ids=["missing", "capitalised", "renamed", "semicolons"],
)
def test_a_missing_or_renamed_column_is_named_with_the_columns_expected_and_found(
    tmp_path, header, row, missing, found
):
    write_pair(tmp_path, "a")
    manifest = write_manifest(tmp_path, f"{header}\n{row}\n")
    expected = (
        f"manifest {manifest}: missing column {missing}; expected columns image, mask, subject "
        f"(optional image_id), found {found}"
    )
    assert error_line(validate_manifest, manifest, NO_SCORES) == expected


def test_a_column_given_twice_is_refused_not_renamed(tmp_path):
    # pandas alone would read the second as 'subject.1' and the row's subject from the first.
    write_pair(tmp_path, "a")
    manifest = write_manifest(tmp_path, "image,mask,subject,subject\nimages/a.png,masks/a.png,s1,s2\n")
    expected = (
        f"manifest {manifest}: column 'subject' appears 2 times in the header; expected each column once"
    )
    assert error_line(validate_manifest, manifest) == expected
    assert error_line(read_manifest, manifest) == expected


def test_a_row_with_a_cell_too_many_is_refused_not_shifted(tmp_path):
    # pandas alone would take the first cell as an index and read image=masks/a.png, mask=s1.
    write_pair(tmp_path, "a")
    manifest = write_manifest(tmp_path, "image,mask,subject\nimages/a.png,masks/a.png,s1,extra\n")
    expected = (
        f"manifest {manifest}, row 2: has 4 cells, but the header names 3 columns; expected one cell "
        "per column (a comma inside a cell must be quoted)"
    )
    assert error_line(validate_manifest, manifest) == expected


def test_a_manifest_that_is_not_utf8_says_which_encoding_is_expected(tmp_path):
    write_pair(tmp_path, "a")
    text = "image,mask,subject\nimages/a.png,masks/a.png,Zoë\n"
    manifest = write_manifest(tmp_path, text.encode("latin-1"))
    expected = (
        f"manifest {manifest}: not a readable CSV file: expected UTF-8 text, found byte 0xeb, which "
        "UTF-8 cannot decode (save it as CSV UTF-8)"
    )
    assert error_line(validate_manifest, manifest) == expected


def test_a_manifest_path_that_is_a_directory_is_named_as_one(tmp_path):
    folder = tmp_path / "manifest.csv"
    folder.mkdir()
    assert error_line(validate_manifest, folder) == f"manifest {folder}: is a directory; expected a CSV file"


def test_a_manifest_with_a_bom_and_crlf_line_ends_reads_as_the_plain_one(tmp_path):
    for name in ("a", "b"):
        write_pair(tmp_path / "plain", name)
        write_pair(tmp_path / "excel", name)
    text = "image,mask,subject\nimages/a.png,masks/a.png,s1\nimages/b.png,masks/b.png,s2\n"
    plain = write_manifest(tmp_path / "plain", text)
    excel = write_manifest(tmp_path / "excel", ("\ufeff" + text.replace("\n", "\r\n")).encode("utf-8"))

    validate_manifest(excel, NO_SCORES)
    read = read_manifest(excel)

    assert list(read.columns) == ["image_id", "subject", "image", "mask"]
    assert read["image_id"].tolist() == ["a", "b"] and read["subject"].tolist() == ["s1", "s2"]
    assert read["image"].tolist() == [str(tmp_path / "excel" / "images" / f"{n}.png") for n in "ab"]
    expected = read_manifest(plain)
    for column in ("image", "mask"):
        expected[column] = expected[column].str.replace(str(tmp_path / "plain"), str(tmp_path / "excel"))
    pd.testing.assert_frame_equal(read, expected)


def test_paths_with_spaces_commas_and_non_ascii_letters_are_read_and_kept(tmp_path):
    image = save_picture(tmp_path / "my images" / "Zoë 画像, left.png", ramp())
    mask = save_picture(tmp_path / "masks dir" / "Zoë mask.png", binary_mask())
    other, other_mask = write_pair(tmp_path, "b")
    manifest = write_manifest(
        tmp_path,
        'image,mask,subject\n"my images/Zoë 画像, left.png",masks dir/Zoë mask.png,Zoë Ø\n'
        "images/b.png,masks/b.png,s2\n",
    )
    settings = {"source": "manifest", "manifest": str(manifest), **NO_SCORES}

    run_data(settings, tmp_path / "out")

    written = read_manifest(tmp_path / "out" / "manifest.csv")
    assert written["image"].tolist() == [str(image), str(other)]
    assert written["mask"].tolist() == [str(mask), str(other_mask)]
    assert written["image_id"].tolist() == ["Zoë 画像, left", "b"]
    assert written["subject"].tolist() == ["Zoë Ø", "s2"]
    images = pd.read_csv(tmp_path / "out" / "images.csv", dtype={"image_id": str})
    assert images["lesion_pixels"].tolist() == [12, 12]


# ---------------------------------------------------------------- paths the rows name


def test_an_image_path_that_is_a_directory_is_named_as_one(tmp_path):
    folder = tmp_path / "images" / "a.png"
    folder.mkdir(parents=True)
    _, mask = write_pair(tmp_path, "b")
    manifest = write_manifest(tmp_path, "image,mask,subject\nimages/a.png,masks/b.png,s1\n")

    assert problem_lines(manifest) == [
        where(manifest, 2, "image", folder) + "is a directory; expected an image file"
    ]
    assert error_line(read_manifest, manifest) == (
        f"manifest {manifest}, row 2, column 'image': {folder} is a directory; expected a file"
    )


# ---------------------------------------------------------------- subjects and split


def test_the_same_image_file_under_two_subjects_is_refused_naming_both_rows(tmp_path):
    image, _ = write_pair(tmp_path, "a")
    manifest = write_manifest(
        tmp_path,
        "image_id,image,mask,subject\nx1,images/a.png,masks/a.png,s1\nx2,./images/a.png,masks/a.png,s2\n",
    )
    expected = (
        f"manifest {manifest}, row 3, column 'image': file {image} is the image of row 2 too, under "
        "subject 's1' (here 's2'); expected each image file under one subject, or it could be in "
        "train and test at once"
    )
    assert error_line(read_manifest, manifest) == expected
    out = tmp_path / "out"
    settings = {"source": "manifest", "manifest": str(manifest), **NO_SCORES}
    assert error_line(run_data, settings, out) == expected
    assert not out.exists() or not any(out.iterdir())


def test_one_mask_file_shared_by_lesion_free_images_of_two_subjects_is_valid(tmp_path):
    for name in ("a", "b"):
        save_picture(tmp_path / "images" / f"{name}.png", ramp())
    save_picture(tmp_path / "masks" / "empty.png", np.zeros((HEIGHT, WIDTH), dtype=np.uint8))
    manifest = write_manifest(
        tmp_path, "image,mask,subject\nimages/a.png,masks/empty.png,s1\nimages/b.png,masks/empty.png,s2\n"
    )
    validate_manifest(manifest, NO_SCORES)
    assert read_manifest(manifest)["subject"].tolist() == ["s1", "s2"]


def test_too_few_subjects_for_train_val_and_test_says_how_many_are_needed(tmp_path):
    manifest = subjects_manifest(tmp_path, ["s1", "s1", "s2", "s2"])
    assert error_line(make_split, read_manifest(manifest), **split_settings()) == (
        "split: the dataset has 2 subject(s); at least 3 are needed for train, val and test without "
        "sharing a subject"
    )


# ---------------------------------------------------------------- scores


@pytest.mark.parametrize(
    ("cell", "what"),
    [
        ("N/A", "expected a score, found 'N/A', which marks a missing value"),
        ("", "expected a score, found an empty cell"),
        ("NaN", "expected a score, found 'NaN', which marks a missing value"),
        ("1,5", "expected a number, got '1,5'"),
        ("35", "score 35 is outside data.score_range [0, 34]"),
    ],
    ids=["n/a", "empty", "nan", "decimal-comma", "out-of-range"],
)
def test_a_score_that_is_not_a_number_in_range_is_one_line_naming_row_and_column(tmp_path, cell, what):
    image, _ = write_pair(tmp_path, "a")
    write_pair(tmp_path, "b")
    manifest = write_manifest(
        tmp_path,
        f'image,mask,subject,loes\nimages/a.png,masks/a.png,s1,"{cell}"\nimages/b.png,masks/b.png,s2,3\n',
    )
    assert problem_lines(manifest, SCORES) == [where(manifest, 2, "loes", image) + what]


def test_with_invalid_scores_exclude_the_bad_rows_are_left_out_and_listed(tmp_path):
    for name in "abc":
        write_pair(tmp_path, name)
    manifest = write_manifest(
        tmp_path,
        "image,mask,subject,loes\nimages/a.png,masks/a.png,s1,N/A\nimages/b.png,masks/b.png,s2,4.5\n"
        "images/c.png,masks/c.png,s3,\n",
    )
    settings = {"source": "manifest", "manifest": str(manifest), **SCORES, "invalid_scores": "exclude"}

    run_data(settings, tmp_path / "out")

    written = pd.read_csv(tmp_path / "out" / "manifest.csv", dtype={"image_id": str})
    assert written["image_id"].tolist() == ["b"] and written["score"].tolist() == [4.5]
    summary = json.loads((tmp_path / "out" / "data_summary.json").read_text())
    assert summary["scores"]["excluded"] == [
        {"row": 2, "image_id": "a", "reason": "expected a score, found 'N/A', which marks a missing value"},
        {"row": 4, "image_id": "c", "reason": "expected a score, found an empty cell"},
    ]
