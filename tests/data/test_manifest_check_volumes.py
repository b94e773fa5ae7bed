"""Tests of the manifest check on NIfTI volumes: each problem one exact line, all raised together."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from lesionflow.data.manifest_check import ManifestProblems, check_manifest, validate_manifest
from lesionflow.io.readers import read_image, read_mask

SHAPE = (8, 9, 6)
# The tolerance the check states for the oblique affine's smallest voxel (0.8 mm).
TOLERANCE = "0.0008"
NOT_3D = "expected a 3D volume (a 4th axis of length 1 is accepted)"
ONE_KIND = "an image and its mask must both be 2D pictures or both NIfTI volumes"


def _oblique_affine() -> np.ndarray:
    """A voxel-to-world matrix with anisotropic spacing, a rotation about z and a translation."""
    angle = np.deg2rad(30)
    rotation = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag([0.8, 1.2, 2.5])
    affine[:3, 3] = [-10.0, 4.0, 31.5]
    return affine


def _image(shape: tuple[int, ...] = SHAPE) -> np.ndarray:
    """A float32 ramp: not constant, every voxel finite."""
    return np.arange(np.prod(shape), dtype=np.float32).reshape(shape) / 10


def _labels(shape: tuple[int, ...] = SHAPE, lesion: float = 1) -> np.ndarray:
    """A uint8 (or float, for a fractional ``lesion``) mask with a small cube of ``lesion``."""
    mask = np.zeros(shape, dtype=np.uint8 if float(lesion).is_integer() else np.float32)
    mask[(slice(2, 5), slice(3, 6), slice(1, 4))[: len(shape)]] = lesion
    return mask


def _volume(path: Path, array: np.ndarray, affine: np.ndarray | None = None) -> str:
    """Save ``array`` as NIfTI at ``path`` and return its name relative to the manifest."""
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array, _oblique_affine() if affine is None else affine), path)
    return f"{path.parent.name}/{path.name}"


def _picture(path: Path, array: np.ndarray) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return f"{path.parent.name}/{path.name}"


def _manifest(folder: Path, rows: list[str], header: str = "image,mask,subject") -> Path:
    path = folder / "manifest.csv"
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


def _gzip_error(path: Path) -> str:
    """What Python's gzip says when ``path`` is read to its end."""
    try:
        with gzip.open(path) as stream:
            stream.read()
    except (OSError, EOFError) as err:
        return str(err)
    raise AssertionError(f"{path} decompresses without error")


def _problem_lines(manifest: Path, settings: dict | None = None) -> list[str]:
    with pytest.raises(ManifestProblems) as caught:
        validate_manifest(manifest, settings)
    return caught.value.lines[1:]


def _line(manifest: Path, row: int, column: str, file: str, what: str) -> str:
    return f"manifest {manifest}, row {row}, column '{column}', file {manifest.parent / file}: {what}"


@pytest.fixture()
def bad_volumes(tmp_path) -> tuple[Path, dict[int, tuple[str, str, str]]]:
    """A sound row 2, then one row per problem; returns the manifest and row -> (column, file, what)."""
    image = _volume(tmp_path / "images" / "a.nii.gz", _image())
    mask = _volume(tmp_path / "masks" / "a.nii.gz", _labels())
    # Ids of their own, so rows can share the sound image without repeating its id.
    rows = [f"r2,{image},{mask},s2"]
    expected: dict[int, tuple[str, str, str]] = {}

    def add(image_name: str, mask_name: str, column: str, what: str) -> None:
        row = len(rows) + 2
        rows.append(f"r{row},{image_name},{mask_name},s{row}")
        expected[row] = (column, image_name if column == "image" else mask_name, what)

    (tmp_path / "images" / "plain.nii.gz").write_bytes(b"not a volume")
    plain_what = "is not gzip-compressed, as its .nii.gz name says; is it a NIfTI volume?"
    add("images/plain.nii.gz", mask, "image", plain_what)
    (tmp_path / "images" / "text.nii").write_bytes(b"not a volume, " * 40)
    add("images/text.nii", mask, "image", "cannot be opened as a NIfTI volume: not a NIfTI-1 or NIfTI-2 file")

    cut = tmp_path / "images" / "cut.nii.gz"
    # Noise compresses badly, so half the file still holds the whole header.
    _volume(cut, np.random.default_rng(0).random(SHAPE, dtype=np.float32))
    cut.write_bytes(cut.read_bytes()[: cut.stat().st_size // 2])
    assert nib.load(cut).shape == SHAPE  # the header loads; only the voxels tell
    cut_what = f"cannot be decoded ({_gzip_error(cut)}); is it truncated or corrupt?"
    add("images/cut.nii.gz", mask, "image", cut_what)

    short = tmp_path / "images" / "short.nii"
    _volume(short, _image())
    short.write_bytes(short.read_bytes()[:1000])
    promised = 352 + np.prod(SHAPE) * 4  # the 348-byte header, 4 extension bytes, float32 voxels
    short_what = f"it holds 1000 bytes, its header promises {promised}"
    add("images/short.nii", mask, "image", f"cannot be decoded ({short_what}); is it truncated?")

    stub = tmp_path / "images" / "stub.nii"
    _volume(stub, _image())
    stub.write_bytes(stub.read_bytes()[:200])
    stub_what = "cannot be decoded (it holds 200 bytes, fewer than a NIfTI header's 348); is it truncated?"
    add("images/stub.nii", mask, "image", stub_what)

    bad_crc = tmp_path / "masks" / "crc.nii.gz"
    _volume(bad_crc, _labels())
    stored = bytearray(bad_crc.read_bytes())
    stored[-5] ^= 0xFF  # the gzip trailer's CRC: nibabel alone would read these voxels silently
    bad_crc.write_bytes(bytes(stored))
    crc_what = f"cannot be decoded ({_gzip_error(bad_crc)}); is it truncated or corrupt?"
    add(image, "masks/crc.nii.gz", "mask", crc_what)

    four = _volume(tmp_path / "images" / "four.nii.gz", _image((*SHAPE, 2)))
    add(four, mask, "image", f"shape 8x9x6x2 has 4 axes; {NOT_3D}")
    flat_mask = _volume(tmp_path / "masks" / "slice.nii.gz", _labels(SHAPE[:2]))
    add(image, flat_mask, "mask", f"shape 8x9 has 2 axes; {NOT_3D}")

    thin = _volume(tmp_path / "masks" / "thin.nii.gz", _labels((8, 9, 5)))
    add(image, thin, "mask", "shape 8x9x5 differs from the image's 8x9x6")
    shifted_affine = _oblique_affine()
    shifted_affine[:3, 3] += [0.0, 0.0, 2.0]
    shifted = _volume(tmp_path / "masks" / "shifted.nii.gz", _labels(), shifted_affine)
    shifted_what = (
        "affine differs from the image's: it puts a voxel up to 2 mm from where the image's does "
        f"(tolerance {TOLERANCE} mm); the mask must be on the image's grid"
    )
    add(image, shifted, "mask", shifted_what)

    multi = _labels()
    multi[0, 0, :3] = [2, 3, 3]
    multi_label = _volume(tmp_path / "masks" / "multi.nii.gz", multi)
    multi_what = (
        "values are not binary: 4 distinct values from 0 to 3 (a multi-label or resampled mask?): set "
        "data.mask_threshold (values above it are lesion; 0 makes every non-zero label lesion) or a "
        "mask_threshold column"
    )
    add(image, multi_label, "mask", multi_what)
    twos = _volume(tmp_path / "masks" / "twos.nii.gz", _labels(lesion=2))
    twos_what = (
        "binary mask whose lesion value 2 is not above the mask threshold 127, so it would read as "
        "lesion-free: set data.mask_threshold (or a mask_threshold column) below the lesion value"
    )
    add(image, twos, "mask", twos_what)

    holes = _image()
    holes[0, 0, :3] = np.nan
    holes[1, 1, 1] = -np.inf
    nan = _volume(tmp_path / "images" / "nan.nii.gz", holes)
    add(nan, mask, "image", "4 of 432 voxels are not finite (3 NaN, 1 infinite)")
    flat = _volume(tmp_path / "images" / "flat.nii.gz", np.full(SHAPE, 5, dtype=np.float32))
    flat_what = "every voxel has the same value 5.0: a constant image holds nothing to learn from"
    add(flat, mask, "image", flat_what)

    ramp = np.zeros((SHAPE[1], SHAPE[0]), dtype=np.uint8)
    ramp[:, 2:] = 200
    picture_mask = _picture(tmp_path / "masks" / "a.png", ramp)
    add(image, picture_mask, "mask", f"is a 2D picture but the image is a NIfTI volume (.nii.gz); {ONE_KIND}")
    picture = _picture(tmp_path / "images" / "a.png", ramp)
    add(picture, mask, "mask", f"is a NIfTI volume but the image is a 2D picture (.png); {ONE_KIND}")
    return _manifest(tmp_path, rows, "image_id,image,mask,subject"), expected


def test_each_volume_problem_is_one_exact_line_naming_row_column_and_file(bad_volumes):
    manifest, expected = bad_volumes
    lines = _problem_lines(manifest)
    for row, (column, file, what) in expected.items():
        named = [line for line in lines if f", row {row}, " in line]
        assert named == [_line(manifest, row, column, file, what)]


def test_all_volume_problems_are_raised_together_after_a_count_line(bad_volumes):
    manifest, expected = bad_volumes
    with pytest.raises(ManifestProblems) as caught:
        validate_manifest(manifest)
    error = caught.value
    count = len(expected)
    assert error.lines[0] == f"manifest {manifest}: {count} problems in {count} rows"
    assert error.lines[1:] == [_line(manifest, row, *expected[row]) for row in sorted(expected)]
    assert [problem.row for problem in error.problems] == sorted(expected)


def test_sound_volume_manifest_passes_and_its_files_load(tmp_path):
    # A 0/1 label mask; uncompressed with a 0/255 mask; a mask with a 4th axis of length 1.
    masks = {"a.nii.gz": _labels(), "b.nii": _labels(lesion=255), "c.nii.gz": _labels()[..., None]}
    rows = [
        f"{_volume(tmp_path / 'images' / name, _image())},{_volume(tmp_path / 'masks' / name, mask)},s_{name}"
        for name, mask in masks.items()
    ]
    assert check_manifest(_manifest(tmp_path, rows)) == []
    for name in masks:
        image, geometry = read_image(tmp_path / "images" / name)
        mask, mask_geometry = read_mask(tmp_path / "masks" / name)
        assert image.shape == (1, *SHAPE) and mask.shape == SHAPE and mask.sum() == 27
        np.testing.assert_allclose(mask_geometry.affine, geometry.affine, atol=1e-5)
        np.testing.assert_allclose(geometry.affine, _oblique_affine(), atol=1e-5)


def test_mask_whose_grid_is_stored_as_a_quaternion_only_is_aligned_with_an_sform_image(tmp_path):
    image = _volume(tmp_path / "images" / "a.nii.gz", _image())
    # Another tool may write the same grid as the qform alone; nibabel then rebuilds the affine
    # from a float32 quaternion, a rounding the tolerance must absorb.
    volume = nib.Nifti1Image(_labels(), None)
    volume.set_qform(_oblique_affine(), code=1)
    volume.set_sform(None, code=0)
    (tmp_path / "masks").mkdir()
    nib.save(volume, tmp_path / "masks" / "a.nii.gz")
    stored = nib.load(tmp_path / "masks" / "a.nii.gz").affine
    assert not np.array_equal(stored, nib.load(tmp_path / image).affine)
    assert check_manifest(_manifest(tmp_path, [f"{image},masks/a.nii.gz,s1"])) == []


def test_flipped_mask_names_both_orientations(tmp_path):
    image = _volume(tmp_path / "images" / "a.nii.gz", _image(), np.diag([1.0, 1.0, 1.0, 1.0]))
    flipped_affine = np.diag([-1.0, 1.0, 1.0, 1.0])
    flipped_affine[0, 3] = SHAPE[0] - 1  # the same box, stored right to left
    mask = _volume(tmp_path / "masks" / "a.nii.gz", _labels(), flipped_affine)
    (line,) = _problem_lines(_manifest(tmp_path, [f"{image},{mask},s1"]))
    # Voxel 0 and voxel 7 swap places: they are 7 mm apart.
    assert line.endswith(
        ": affine differs from the image's: it puts a voxel up to 7 mm from where the image's does "
        "(tolerance 0.001 mm); it is oriented LAS, the image RAS; the mask must be on the image's grid"
    )


@pytest.mark.parametrize(
    ("header", "cell", "settings"),
    [
        ("image,mask,subject", "", {"mask_threshold": 0}),
        ("image,mask,subject,mask_threshold", ",0", {}),
    ],
    ids=["data-setting", "manifest-column"],
)
def test_multi_label_mask_passes_when_a_threshold_is_set(tmp_path, header, cell, settings):
    multi = _labels()
    multi[0, 0, :2] = [2, 3]
    image = _volume(tmp_path / "images" / "a.nii.gz", _image())
    mask = _volume(tmp_path / "masks" / "a.nii.gz", multi)
    assert check_manifest(_manifest(tmp_path, [f"{image},{mask},s1{cell}"], header), settings) == []


def test_fractional_lesion_value_of_a_float_mask_is_reported_as_lesion_free(tmp_path):
    image = _volume(tmp_path / "images" / "a.nii.gz", _image())
    mask = _volume(tmp_path / "masks" / "a.nii.gz", _labels(lesion=0.5))
    (line,) = _problem_lines(_manifest(tmp_path, [f"{image},{mask},s1"]))
    assert "binary mask whose lesion value 0.5 is not above the mask threshold 127" in line
    # io reads it as lesion-free, which is what the line warns of.
    assert not read_mask(tmp_path / mask).array.any()


def test_nan_in_a_volume_mask_is_reported(tmp_path):
    image = _volume(tmp_path / "images" / "a.nii.gz", _image())
    labels = _labels().astype(np.float32)
    labels[0, 0, 0] = np.nan
    mask = _volume(tmp_path / "masks" / "a.nii.gz", labels)
    lines = _problem_lines(_manifest(tmp_path, [f"{image},{mask},s1"]))
    what = "1 of 432 voxels are not finite (1 NaN, 0 infinite)"
    assert lines == [_line(tmp_path / "manifest.csv", 2, "mask", mask, what)]


@pytest.mark.parametrize(
    ("offset", "value", "what"),
    [
        (42, -3, "header gives shape -3x9x6, which holds no voxels; is the header corrupt?"),
        (70, 999, "cannot be opened as a NIfTI volume (data code 999 not recognized)"),
    ],
    ids=["negative-size", "unknown-datatype"],
)
def test_corrupt_header_field_is_a_line_not_a_crash(tmp_path, offset, value, what):
    image = tmp_path / "images" / "a.nii"
    _volume(image, _image())
    header = bytearray(image.read_bytes())
    header[offset : offset + 2] = struct.pack("<h", value)  # dim[1] or datatype, as NIfTI-1 lays them out
    image.write_bytes(bytes(header))
    mask = _volume(tmp_path / "masks" / "a.nii", _labels())
    manifest = _manifest(tmp_path, [f"images/a.nii,{mask},s1"])
    assert _problem_lines(manifest) == [_line(manifest, 2, "image", "images/a.nii", what)]


def test_further_images_of_a_case_are_checked_and_must_share_the_image_grid(tmp_path):
    shifted = _oblique_affine()
    shifted[:3, 3] += [0.0, 0.0, 3.0]
    rows = [
        ",".join([
            _volume(tmp_path / "flair" / "a.nii.gz", _image()),
            _volume(tmp_path / "t1" / "a.nii.gz", _image() * 2),
            _volume(tmp_path / "masks" / "a.nii.gz", _labels()),
            "s_a",
        ]),
        ",".join([
            _volume(tmp_path / "flair" / "b.nii.gz", _image()),
            _volume(tmp_path / "t1" / "b.nii.gz", _image(), shifted),
            _volume(tmp_path / "masks" / "b.nii.gz", _labels()),
            "s_b",
        ]),
        ",".join([
            _volume(tmp_path / "flair" / "c.nii.gz", _image()),
            "t1/missing.nii.gz",
            _volume(tmp_path / "masks" / "c.nii.gz", _labels()),
            "s_c",
        ]),
    ]
    manifest = _manifest(tmp_path, rows, header="image,image_t1,mask,subject")
    lines = _problem_lines(manifest)
    assert len(lines) == 2
    assert f"row 3, column 'image_t1', file {tmp_path / 't1' / 'b.nii.gz'}: affine differs" in lines[0]
    assert "the image_t1 must be on the image's grid" in lines[0]
    missing = tmp_path / "t1" / "missing.nii.gz"
    assert lines[1] == (
        f"manifest {manifest}, row 4, column 'image_t1', file {missing}: "
        "does not exist (paths are relative to the manifest's folder)"
    )
