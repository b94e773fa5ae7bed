"""Tests of the manifest check: every problem of every row, one line each, raised together."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from manifests import NO_SCORES, binary_mask, ramp, write_manifest, write_pair
from PIL import Image

from lesionflow.data.dataset import run_data
from lesionflow.data.manifest_check import ManifestProblems, check_manifest, validate_manifest
from lesionflow.io.readers import read_image, read_mask
from lesionflow.pipeline.errors import LesionflowError

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "data.py"
WIDTH, HEIGHT = 16, 12


def _save(path: Path, array: np.ndarray, **options) -> str:
    """Save ``array`` as a picture at ``path`` and return its name relative to the manifest."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, **options)
    return f"{path.parent.name}/{path.name}"


def _manifest(folder: Path, rows: list[str], header: str = "image,mask,subject") -> Path:
    path = folder / "manifest.csv"
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


def _clean_row(folder: Path, name: str) -> str:
    image = _save(folder / "images" / f"{name}.png", ramp())
    mask = _save(folder / "masks" / f"{name}.png", binary_mask())
    return f"{image},{mask},subject_{name}"


def _grey_mask_with_values(*values: int) -> np.ndarray:
    mask = np.zeros((HEIGHT, WIDTH), dtype=np.uint8)
    mask.flat[: len(values)] = values
    return mask


# Row (header = row 1) -> the column, the file (relative to the manifest) and what the line says.
BAD_ROWS = {
    3: ("image", "images/gone.png", "does not exist"),
    4: ("image", "images/garbage.png", "cannot be opened"),
    5: ("mask", "masks/small.png", "size 8x8 differs from the image's 16x12"),
    6: ("mask", "masks/jpeg_like.png", "not binary"),
    7: ("image", "images/a.png", "image id 'a'"),
    8: ("subject", "images/nosubject.png", "expected a value"),
    9: ("image", "images/flat.png", "same value"),
}


@pytest.fixture()
def bad_manifest(tmp_path) -> Path:
    """A clean row 2, then one row per problem of BAD_ROWS, each with that problem only."""
    rows = [_clean_row(tmp_path, "a")]
    mask = _save(tmp_path / "masks" / "ok.png", binary_mask())
    rows.append(f"images/gone.png,{mask},s3")
    (tmp_path / "images" / "garbage.png").write_bytes(b"not a picture at all")
    rows.append(f"images/garbage.png,{mask},s4")
    image = _save(tmp_path / "images" / "big.png", ramp())
    small = _save(tmp_path / "masks" / "small.png", binary_mask(8, 8))
    rows.append(f"{image},{small},s5")
    noisy = _save(tmp_path / "masks" / "jpeg_like.png", _grey_mask_with_values(0, 3, 250, 255))
    rows.append(f"{_save(tmp_path / 'images' / 'noisy.png', ramp())},{noisy},s6")
    rows.append(f"images/a.png,{mask},s7")
    nosubject = _save(tmp_path / "images" / "nosubject.png", ramp())
    rows.append(f"{nosubject},{mask},")
    flat = _save(tmp_path / "images" / "flat.png", np.full((HEIGHT, WIDTH, 3), 90, dtype=np.uint8))
    rows.append(f"{flat},{mask},s9")
    return _manifest(tmp_path, rows)


def _problem_lines(manifest: Path, settings: dict | None = None) -> list[str]:
    with pytest.raises(ManifestProblems) as caught:
        validate_manifest(manifest, settings)
    return caught.value.lines[1:]


@pytest.mark.parametrize("row", sorted(BAD_ROWS))
def test_each_problem_is_one_line_naming_manifest_row_column_and_file(bad_manifest, row):
    column, file, what = BAD_ROWS[row]
    lines = [line for line in _problem_lines(bad_manifest) if f", row {row}, " in line]
    assert len(lines) == 1, lines
    where = f"manifest {bad_manifest}, row {row}, column '{column}', file {bad_manifest.parent / file}:"
    assert lines[0].startswith(where)
    assert what in lines[0]
    assert "\n" not in lines[0]


def test_all_problems_are_raised_together_after_a_count_line(bad_manifest):
    with pytest.raises(ManifestProblems) as caught:
        validate_manifest(bad_manifest)
    error = caught.value
    assert isinstance(error, LesionflowError)
    assert error.lines[0] == f"manifest {bad_manifest}: 7 problems in 7 rows"
    assert str(error).splitlines() == error.lines
    assert [problem.row for problem in error.problems] == sorted(BAD_ROWS)
    assert not any(", row 2, " in line for line in error.lines)


def test_clean_manifest_passes(tmp_path):
    manifest = _manifest(tmp_path, [_clean_row(tmp_path, name) for name in ("a", "b", "c")])
    assert check_manifest(manifest) == []
    validate_manifest(manifest)


@pytest.mark.parametrize(
    ("header", "cell", "settings"),
    [
        ("image,mask,subject", "", {"mask_threshold": 127}),
        ("image,mask,subject,mask_threshold", ",127", {}),
    ],
    ids=["data-setting", "manifest-column"],
)
def test_non_binary_mask_passes_when_a_threshold_is_set(tmp_path, header, cell, settings):
    image = _save(tmp_path / "images" / "a.png", ramp())
    mask = _save(tmp_path / "masks" / "a.png", _grey_mask_with_values(0, 3, 250, 255))
    manifest = _manifest(tmp_path, [f"{image},{mask},s1{cell}"], header)
    assert check_manifest(manifest, settings) == []


def test_non_binary_mask_without_threshold_names_the_setting(tmp_path):
    image = _save(tmp_path / "images" / "a.png", ramp())
    # A 0/255 mask saved as lossy JPEG gains values around its edges.
    mask = _save(tmp_path / "masks" / "a.jpg", binary_mask(), quality=30)
    (line,) = _problem_lines(_manifest(tmp_path, [f"{image},{mask},s1"]))
    assert line.startswith(f"manifest {tmp_path / 'manifest.csv'}, row 2, column 'mask', file ")
    assert "values are not binary" in line and "data.mask_threshold" in line


def test_colour_mask_needs_its_channel_and_a_binary_one_passes_with_it(tmp_path):
    image = _save(tmp_path / "images" / "a.png", ramp())
    red = np.zeros((HEIGHT, WIDTH, 3), dtype=np.uint8)
    red[2:5, 3:7, 0] = 255
    mask = _save(tmp_path / "masks" / "a.png", red)
    manifest = _manifest(tmp_path, [f"{image},{mask},s1"])
    (line,) = _problem_lines(manifest)
    assert "colour mask" in line and "data.mask_channel" in line
    assert check_manifest(manifest, {"mask_channel": 0}) == []


def test_binary_mask_whose_lesion_value_is_under_the_threshold_is_refused(tmp_path):
    image = _save(tmp_path / "images" / "a.png", ramp())
    dim = _save(tmp_path / "masks" / "a.png", (binary_mask() > 0).astype(np.uint8) * 76)
    manifest = _manifest(tmp_path, [f"{image},{dim},s1"])
    (line,) = _problem_lines(manifest)
    assert "lesion value 76" in line and "lesion-free" in line
    assert check_manifest(manifest, {"mask_threshold": 50}) == []


def test_label_mask_of_zeros_and_ones_passes(tmp_path):
    image = _save(tmp_path / "images" / "a.png", ramp())
    labels = _save(tmp_path / "masks" / "a.png", (binary_mask() > 0).astype(np.uint8))
    assert check_manifest(_manifest(tmp_path, [f"{image},{labels},s1"])) == []


def test_float_tiff_with_nan_is_reported(tmp_path):
    values = np.linspace(0, 1, HEIGHT * WIDTH, dtype=np.float32).reshape(HEIGHT, WIDTH)
    values[0, :3] = np.nan
    image = _save(tmp_path / "images" / "a.tif", values)
    mask = _save(tmp_path / "masks" / "a.png", binary_mask())
    lines = _problem_lines(_manifest(tmp_path, [f"{image},{mask},s1"]))
    assert any("3 of 192 pixels are NaN" in line for line in lines)
    assert all(", row 2, column 'image', file " in line for line in lines)


def test_empty_image_and_mask_cells_are_reported_without_a_file(tmp_path):
    _clean_row(tmp_path, "a")
    lines = _problem_lines(_manifest(tmp_path, [",,s1"]))
    assert lines == [
        f"manifest {tmp_path / 'manifest.csv'}, row 2, column '{column}': expected a value, "
        "found an empty cell"
        for column in ("image", "mask")
    ]


def test_gif_and_tiff_pictures_pass_and_load(tmp_path):
    rows = []
    grey16 = (np.arange(HEIGHT * WIDTH, dtype=np.uint16) * 300).reshape(HEIGHT, WIDTH)
    pictures = {
        "gif": (ramp(), binary_mask(), {}),
        "tif": (grey16, binary_mask(), {}),
    }
    for suffix, (image, mask, options) in pictures.items():
        image_name = _save(tmp_path / "images" / f"{suffix}.{suffix}", image, **options)
        mask_name = _save(tmp_path / "masks" / f"{suffix}.{suffix}", mask, **options)
        rows.append(f"{image_name},{mask_name},s_{suffix}")
    manifest = _manifest(tmp_path, rows)
    assert check_manifest(manifest) == []
    assert read_image(tmp_path / "images" / "gif.gif").array.shape == (3, HEIGHT, WIDTH)
    assert read_image(tmp_path / "images" / "tif.tif").array.shape == (1, HEIGHT, WIDTH)
    for suffix in pictures:
        np.testing.assert_array_equal(
            read_mask(tmp_path / "masks" / f"{suffix}.{suffix}").array, binary_mask() > 0
        )


def test_run_data_stops_before_writing_anything(bad_manifest, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(ManifestProblems):
        run_data({"source": "manifest", "manifest": str(bad_manifest), **NO_SCORES}, out)
    assert not out.exists()


def test_data_cli_prints_one_line_per_problem_and_exits_2(bad_manifest, tmp_path):
    settings = json.dumps({"source": "manifest", "manifest": str(bad_manifest), **NO_SCORES})
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--settings", settings, "--out", str(tmp_path / "out")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert lines[0] == f"lesionflow: error: manifest {bad_manifest}: 7 problems in 7 rows"
    assert len(lines) == 8
    for line, row in zip(lines[1:], sorted(BAD_ROWS), strict=True):
        assert line.startswith(f"  manifest {bad_manifest}, row {row}, column ")


def _idrid_subset(shared_dir: Path, folder: Path, rows: int) -> Path:
    """The first ``rows`` rows of the IDRiD manifest, with absolute paths, in ``folder``."""
    source = shared_dir / "data" / "idrid-ex" / "manifest.csv"
    if not source.is_file():
        pytest.skip(f"real dataset not present at {source.parent}")
    header, *lines = source.read_text().splitlines()
    absolute = []
    for line in lines[:rows]:
        image, mask, subject = line.split(",")
        absolute.append(f"{source.parent / image},{source.parent / mask},{subject}")
    return _manifest(folder, absolute, header)


def test_idrid_masks_without_mask_settings_are_reported_as_non_binary_with_the_hint(shared_dir, tmp_path):
    lines = _problem_lines(_idrid_subset(shared_dir, tmp_path, 2))
    assert len(lines) == 2
    for line in lines:
        assert "column 'mask'" in line and "_EX.jpg" in line
        assert "not binary" in line and "data.mask_channel" in line and "data.mask_threshold" in line


def test_idrid_manifest_passes_with_red_channel_and_threshold(shared_dir):
    manifest = shared_dir / "data" / "idrid-ex" / "manifest.csv"
    if not manifest.is_file():
        pytest.skip(f"real dataset not present at {manifest.parent}")
    assert check_manifest(manifest, {"mask_channel": 0, "mask_threshold": 127}) == []


def test_files_whose_suffix_no_reader_takes_are_reported_with_the_suffixes_that_are(tmp_path):
    rows = [_clean_row(tmp_path, "a")]
    mask = _save(tmp_path / "masks" / "ok.png", binary_mask())
    (tmp_path / "images" / "scan.dcm").write_bytes(b"DICM")
    rows.append(f"images/scan.dcm,{mask},s3")
    (tmp_path / "images" / "array.npy").write_bytes(b"not checked yet")
    rows.append(f"images/array.npy,{mask},s4")
    lines = _problem_lines(_manifest(tmp_path, rows))
    assert len(lines) == 2
    assert "row 3, column 'image'" in lines[0] and "unsupported file suffix '.dcm'" in lines[0]
    assert ".png, .jpg" in lines[0]
    assert "row 4, column 'image'" in lines[1] and "NumPy files are not supported yet" in lines[1]


def test_a_split_cell_that_is_not_a_subset_is_one_problem_line(tmp_path):
    for name, pixels in (("a", 5), ("b", 0)):
        write_pair(tmp_path, name, pixels)
    manifest = write_manifest(
        tmp_path,
        "image,mask,subject,split\nimages/a.png,masks/a.png,1,train\nimages/b.png,masks/b.png,2,tset\n",
    )
    (problem,) = check_manifest(manifest)
    assert problem.line(manifest) == (
        f"manifest {manifest}, row 3, column 'split', file {tmp_path / 'images' / 'b.png'}: "
        "expected one of train, val, test, got 'tset'"
    )


# Row (header = row 1) -> the score cell and what its line says; row 2 holds a valid score.
BAD_SCORES = {
    3: ("", "expected a score, found an empty cell"),
    4: ("N/A", "expected a score, found 'N/A', which marks a missing value"),
    5: ("abc", "expected a number, got 'abc'"),
    6: ("inf", "expected a finite number, got 'inf'"),
    7: ("40", "score 40 is outside data.score_range [0, 34]"),
}


def _scored_manifest(folder: Path, cells: dict[int, str]) -> Path:
    """A clean picture per row, with the score of ``cells`` (row -> cell) in column ``loes``."""
    rows = [f"{_clean_row(folder, f'r{row}')},{cell}" for row, cell in sorted(cells.items())]
    return _manifest(folder, rows, "image,mask,subject,loes")


def _score_settings(invalid_scores: str = "error") -> dict:
    return {**NO_SCORES, "score_column": "loes", "score_range": [0, 34], "invalid_scores": invalid_scores}


def test_each_bad_score_cell_is_one_line_naming_row_and_column_all_collected_at_once(tmp_path):
    manifest = _scored_manifest(tmp_path, {2: "12.5", **{row: cell for row, (cell, _) in BAD_SCORES.items()}})
    with pytest.raises(ManifestProblems) as caught:
        validate_manifest(manifest, _score_settings())
    error = caught.value
    assert error.lines[0] == f"manifest {manifest}: 5 problems in 5 rows"
    assert [problem.row for problem in error.problems] == sorted(BAD_SCORES)
    for line, (row, (_, what)) in zip(error.lines[1:], sorted(BAD_SCORES.items()), strict=True):
        image = tmp_path / "images" / f"r{row}.png"
        assert line == f"manifest {manifest}, row {row}, column 'loes', file {image}: {what}"


def test_score_problems_are_collected_with_the_file_problems_of_the_same_manifest(bad_manifest):
    text = bad_manifest.read_text().splitlines()
    cells = ["3", "abc", "1", "2", "3", "4", "5", "6"]  # row 3's score is bad, as is its image
    rows = [f"{row},{cell}" for row, cell in zip(text[1:], cells, strict=True)]
    bad_manifest.write_text("\n".join([f"{text[0]},loes", *rows]) + "\n")
    lines = _problem_lines(bad_manifest, _score_settings())
    row3 = [line for line in lines if ", row 3, " in line]
    assert len(lines) == 8 and len(row3) == 2
    assert "column 'image'" in row3[0] and "column 'loes'" in row3[1] and "got 'abc'" in row3[1]


def test_bad_scores_are_not_problems_of_the_check_when_they_are_excluded(tmp_path):
    manifest = _scored_manifest(tmp_path, {2: "3", 3: "N/A", 4: "99"})
    assert check_manifest(manifest, _score_settings("exclude")) == []
    assert len(check_manifest(manifest, _score_settings("error"))) == 2


def test_a_missing_score_column_stops_the_check_at_once_listing_the_columns_found(tmp_path):
    manifest = _scored_manifest(tmp_path, {2: "3"})
    settings = {**_score_settings(), "score_column": "loes_score"}
    with pytest.raises(LesionflowError, match=r"no column 'loes_score' \(data\.score_column\); found columns "
                       r"image, mask, subject, loes$"):
        check_manifest(manifest, settings)


def test_a_user_column_named_score_is_refused_unless_it_is_the_score_column(tmp_path):
    rows = [f"{_clean_row(tmp_path, 'a')},3,4"]
    manifest = _manifest(tmp_path, rows, "image,mask,subject,score,loes")
    with pytest.raises(LesionflowError, match=r"column 'score' is reserved"):
        check_manifest(manifest, _score_settings())
    with pytest.raises(LesionflowError, match=r"column 'score' is reserved"):
        check_manifest(manifest, NO_SCORES)
    assert check_manifest(manifest, {**_score_settings(), "score_column": "score"}) == []
