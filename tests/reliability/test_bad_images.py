"""Bad and odd pictures, NIfTI volumes and masks: refused in one line, or read to their true values."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from manifests import NO_SCORES
from PIL import Image
from reliability.bad_input_files import (
    HEIGHT,
    WIDTH,
    binary_mask,
    error_line,
    problem_lines,
    ramp,
    save_picture,
    save_png48,
    where,
    write_manifest,
    write_pair,
)

from lesionflow.data.dataset import run_data
from lesionflow.data.manifest_check import validate_manifest
from lesionflow.data.tiles import cut_tiles, tile_origins
from lesionflow.io.readers import image_reading, read_image, read_mask
from lesionflow.model.sampling import training_transforms
from lesionflow.reports.data_report import data_report_table

# ---------------------------------------------------------------- files that cannot be read as pictures


def _volume(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array, np.diag([0.9, 0.9, 2.0, 1.0])), path)
    return path


def _truncated(path: Path) -> Path:
    """``path`` cut to two thirds of its bytes, as an interrupted copy leaves it."""
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])
    return path


def _noise(shape: tuple[int, ...]) -> np.ndarray:
    # Noise compresses badly, so a cut file still holds the whole header.
    return (np.random.default_rng(0).random(shape) * 255).astype(np.uint8)


# A NIfTI-1 file: its 348-byte header, 4 extension bytes, then 8 x 8 x 6 uint8 voxels.
NIFTI_BYTES = 352 + 8 * 8 * 6


@pytest.mark.parametrize(
    ("name", "ending"),
    [
        ("cut.png", "cannot be decoded (image file is truncated); is it truncated?"),
        ("cut.jpg", "); is it truncated?"),
        (
            "cut.nii",
            f"cannot be decoded (it holds {NIFTI_BYTES * 2 // 3} bytes, its header promises "
            f"{NIFTI_BYTES}); is it truncated?",
        ),
        ("cut.nii.gz", "); is it truncated or corrupt?"),
    ],
    ids=["png", "jpeg", "nii", "nii.gz"],
)
def test_a_truncated_image_is_one_line_saying_it_is_cut_short(tmp_path, name, ending):
    if name.endswith((".nii", ".nii.gz")):
        image = _truncated(_volume(tmp_path / "images" / name, _noise((8, 8, 6))))
        mask = _volume(tmp_path / "masks" / "m.nii.gz", np.zeros((8, 8, 6), np.uint8))
    else:
        image = _truncated(save_picture(tmp_path / "images" / name, _noise((64, 64, 3)), quality=95))
        mask = save_picture(tmp_path / "masks" / "m.png", binary_mask(64, 64))
    manifest = write_manifest(tmp_path, f"image,mask,subject\nimages/{name},masks/{mask.name},s1\n")

    (line,) = problem_lines(manifest)

    assert line.startswith(where(manifest, 2, "image", image) + "cannot be decoded (")
    assert line.endswith(ending)
    # The readers the later stages use say the same in one line (nibabel's own message spans two).
    assert error_line(read_image, image).startswith(f"cannot read image {image}: ")


def test_a_32_bit_integer_picture_beyond_16_bits_is_refused_not_clipped(tmp_path):
    values = np.arange(WIDTH * HEIGHT, dtype=np.int32).reshape(HEIGHT, WIDTH) * 1000
    image = save_picture(tmp_path / "images" / "a.tif", values)
    _, mask = write_pair(tmp_path, "m")
    manifest = write_manifest(tmp_path, "image,mask,subject\nimages/a.tif,masks/m.png,s1\n")
    assert problem_lines(manifest) == [
        where(manifest, 2, "image", image) + "32-bit integer values from 0 to 191000 do not fit the "
        "16-bit range 0 to 65535 it is read in; save it as 8- or 16-bit PNG or TIFF"
    ]


def test_an_unsupported_file_kind_names_the_kinds_that_are(tmp_path):
    image = tmp_path / "images" / "a.dcm"
    image.parent.mkdir()
    image.write_bytes(b"DICM")
    _, mask = write_pair(tmp_path, "m")
    manifest = write_manifest(tmp_path, "image,mask,subject\nimages/a.dcm,masks/m.png,s1\n")
    assert problem_lines(manifest) == [
        where(manifest, 2, "image", image) + "unsupported file suffix '.dcm'; supported: .png, .jpg, "
        ".jpeg, .tif, .tiff, .bmp, .gif, .nii, .nii.gz"
    ]


# ---------------------------------------------------------------- picture kinds, read and reported


def _grey_levels() -> np.ndarray:
    return (np.arange(WIDTH * HEIGHT).reshape(HEIGHT, WIDTH) * 5 % 256).astype(np.uint8)


def _four_colours() -> np.ndarray:
    """An RGB picture of four colours: a palette holds them exactly."""
    colours = np.array([[200, 30, 30], [30, 200, 30], [30, 30, 200], [250, 250, 250]], dtype=np.uint8)
    return colours[np.arange(WIDTH * HEIGHT).reshape(HEIGHT, WIDTH) % 4]


def _picture_kinds(folder: Path) -> dict[str, tuple[np.ndarray, str]]:
    """Pictures of every kind under ``folder/images``: name -> (expected values (C, H, W), read_as)."""
    grey, colours = _grey_levels(), _four_colours()
    sixteen = (np.arange(WIDTH * HEIGHT).reshape(HEIGHT, WIDTH) * 331).astype(np.uint16)
    alpha = np.full((HEIGHT, WIDTH), 77, dtype=np.uint8)  # dropped, never blended in
    images = folder / "images"
    save_picture(images / "sixteen.png", sixteen)
    save_picture(images / "rgba.png", np.dstack([ramp(), alpha]))
    Image.fromarray(colours).quantize(colors=4).save(images / "palette.png")
    save_picture(images / "grey.png", grey)
    Image.fromarray(np.dstack([grey, alpha]), "LA").save(images / "grey_alpha.png")
    save_picture(images / "rgb.png", ramp())
    return {
        "sixteen": (sixteen[None] / 65535.0, "16-bit grey: / 65535"),
        "rgba": (ramp().transpose(2, 0, 1) / 255.0, "8-bit RGBA: RGB / 255, alpha dropped"),
        "palette": (colours.transpose(2, 0, 1) / 255.0, "palette: colours as RGB / 255"),
        "grey": (grey[None] / 255.0, "8-bit grey: / 255"),
        "grey_alpha": (grey[None] / 255.0, "8-bit grey + alpha: grey / 255, alpha dropped"),
        "rgb": (ramp().transpose(2, 0, 1) / 255.0, "8-bit RGB: / 255"),
    }


@pytest.mark.parametrize("name", ["sixteen", "rgba", "palette", "grey", "grey_alpha", "rgb"])
def test_16_bit_rgba_palette_and_greyscale_pictures_are_read_to_their_true_values(tmp_path, name):
    values, read_as = _picture_kinds(tmp_path)[name]
    path = tmp_path / "images" / f"{name}.png"

    image = read_image(path).array

    assert image.dtype == np.float32 and image.shape == values.shape
    np.testing.assert_allclose(image, values, rtol=0, atol=1e-7)
    assert image_reading(path) == read_as


def test_a_16_bit_colour_png_is_read_to_within_one_8_bit_step_and_said_to_be(tmp_path):
    rgb = (np.arange(HEIGHT * WIDTH * 3).reshape(HEIGHT, WIDTH, 3) * 331 % 65536).astype(np.uint16)
    path = save_png48(tmp_path / "deep.png", rgb)

    image = read_image(path).array

    assert image.shape == (3, HEIGHT, WIDTH)
    np.testing.assert_allclose(image, rgb.transpose(2, 0, 1) / 65535.0, rtol=0, atol=1 / 255)
    assert image_reading(path) == "16-bit RGB: high byte / 255 (Pillow reads 8 bits per channel)"
    # An 8-bit colour PNG is not mistaken for one.
    assert image_reading(save_picture(tmp_path / "flat.png", ramp())) == "8-bit RGB: / 255"


def test_the_data_report_says_how_each_kind_of_picture_was_read(tmp_path):
    kinds = _picture_kinds(tmp_path)
    mask = save_picture(tmp_path / "masks" / "m.png", binary_mask())
    rows = [f"images/{name}.png,masks/{mask.name},s_{name}" for name in kinds]
    manifest = write_manifest(tmp_path, "\n".join(["image,mask,subject", *rows]) + "\n")

    run_data({"source": "manifest", "manifest": str(manifest), **NO_SCORES}, tmp_path / "out")

    images = pd.read_csv(tmp_path / "out" / "images.csv", dtype={"image_id": str, "subject": str})
    assert dict(zip(images["image_id"], images["read_as"], strict=True)) == {
        name: read_as for name, (_, read_as) in kinds.items()
    }
    lesions = pd.read_csv(tmp_path / "out" / "lesions.csv", dtype={"image_id": str, "subject": str})
    split = images[["image_id"]].assign(split=["train", "train", "train", "val", "val", "test"])
    report = data_report_table(images, lesions, split).set_index("split")["images read as"]
    assert report.to_dict() == {
        "train": "16-bit grey: / 65535 (1); 8-bit RGBA: RGB / 255, alpha dropped (1); "
        "palette: colours as RGB / 255 (1)",
        "val": "8-bit grey + alpha: grey / 255, alpha dropped (1); 8-bit grey: / 255 (1)",
        "test": "8-bit RGB: / 255 (1)",
    }


def test_a_scaled_integer_nifti_is_read_through_its_header_scaling_and_says_so(tmp_path):
    values = np.linspace(-3.0, 900.0, 8 * 8 * 6, dtype=np.float32).reshape(8, 8, 6)
    volume = nib.Nifti1Image(values, np.diag([0.9, 0.9, 2.0, 1.0]))
    volume.set_data_dtype(np.int16)  # nibabel stores int16 with a slope and an intercept
    nib.save(volume, tmp_path / "scaled.nii.gz")
    proxy = nib.load(tmp_path / "scaled.nii.gz").dataobj
    slope, inter = float(proxy.slope), float(proxy.inter)

    image = read_image(tmp_path / "scaled.nii.gz").array

    np.testing.assert_allclose(image[0], values, atol=slope)
    assert image_reading(tmp_path / "scaled.nii.gz") == (
        f"NIfTI int16: x {slope:g} + {inter:g} (the header's scaling)"
    )


# ---------------------------------------------------------------- masks


def _mask_kinds(folder: Path, lesion: np.ndarray) -> None:
    """Masks of ``lesion`` in every picture kind under ``folder/masks``, each valid as it is."""
    masks = folder / "masks"
    save_picture(masks / "sixteen.png", lesion.astype(np.uint16) * 65535)
    save_picture(masks / "bilevel.png", lesion)  # a bool array saves as a 1-bit picture
    palette = Image.fromarray(lesion.astype(np.uint8), "P")
    palette.putpalette([0, 0, 0, 255, 255, 255])
    palette.save(masks / "palette.png")
    white = np.repeat(lesion[..., None].astype(np.uint8) * 255, 3, axis=2)
    save_picture(masks / "rgba.png", np.dstack([white, np.full(lesion.shape, 255, dtype=np.uint8)]))
    grey = lesion.astype(np.uint8) * 255
    Image.fromarray(np.dstack([grey, grey]), "LA").save(masks / "grey_alpha.png")


@pytest.mark.parametrize("name", ["sixteen", "bilevel", "palette", "rgba", "grey_alpha"])
def test_16_bit_bilevel_palette_and_alpha_masks_are_checked_and_read_to_their_lesion(tmp_path, name):
    lesion = binary_mask() > 0
    _mask_kinds(tmp_path, lesion)
    save_picture(tmp_path / "images" / "a.png", ramp())
    manifest = write_manifest(tmp_path, f"image,mask,subject\nimages/a.png,masks/{name}.png,s1\n")

    validate_manifest(manifest, NO_SCORES)

    np.testing.assert_array_equal(read_mask(tmp_path / "masks" / f"{name}.png").array, lesion)


def test_a_mask_with_more_than_two_values_and_no_threshold_asks_for_one(tmp_path):
    image, _ = write_pair(tmp_path, "a")
    values = binary_mask()
    values[0, :2] = [100, 180]
    mask = save_picture(tmp_path / "masks" / "three.png", values)
    manifest = write_manifest(tmp_path, "image,mask,subject\nimages/a.png,masks/three.png,s1\n")

    assert problem_lines(manifest) == [
        where(manifest, 2, "mask", mask) + "values are not binary: 4 distinct values from 0 to 255 "
        "(lossy JPEG?): set data.mask_threshold (values above it are lesion; 127 suits 0/255 masks) "
        "or a mask_threshold column"
    ]
    # With a threshold the same mask is valid, and lesion is exactly what lies above it.
    validate_manifest(manifest, {"mask_threshold": 150})
    np.testing.assert_array_equal(read_mask(mask, threshold=150).array, values > 150)


def test_a_colour_mask_whose_channels_differ_asks_which_channel_holds_the_lesion(tmp_path):
    write_pair(tmp_path, "a")
    red = np.zeros((HEIGHT, WIDTH, 3), dtype=np.uint8)
    red[2:5, 3:7, 0] = 255
    mask = save_picture(tmp_path / "masks" / "red.png", red)
    manifest = write_manifest(tmp_path, "image,mask,subject\nimages/a.png,masks/red.png,s1\n")
    assert problem_lines(manifest) == [
        where(manifest, 2, "mask", mask) + "colour mask whose channels differ by up to 255: say which "
        "channel holds the lesion with data.mask_channel (0 red, 1 green, 2 blue) or a mask_channel column"
    ]


# ---------------------------------------------------------------- sizes


def test_an_image_smaller_than_a_tile_gets_one_zero_padded_tile_holding_all_of_it():
    image = ramp().transpose(2, 0, 1).astype(np.float32)
    mask = binary_mask() > 0

    origins = tile_origins(mask.shape, 32, 32)
    ((origin, image_tile, mask_tile),) = list(cut_tiles(image, mask, origins, 32))

    assert origin == (0, 0) and image_tile.shape == (3, 32, 32) and mask_tile.shape == (32, 32)
    np.testing.assert_array_equal(image_tile[:, :HEIGHT, :WIDTH], image)
    np.testing.assert_array_equal(mask_tile[:HEIGHT, :WIDTH], mask)
    assert not image_tile[:, HEIGHT:].any() and not image_tile[:, :, WIDTH:].any()
    assert mask_tile.sum() == mask.sum()


def test_an_item_smaller_than_the_training_patch_is_padded_to_it_with_every_lesion_pixel():
    augment = {"flip": False, "rotate90": False, "intensity": False}
    transform = training_transforms(augment, [32, 32], (HEIGHT, WIDTH))
    image = ramp().transpose(2, 0, 1).astype(np.float32) / 255
    label = (binary_mask() > 0)[None].astype(np.float32)

    (sample,) = transform({"image": image, "label": label})

    assert tuple(sample["image"].shape) == (3, 32, 32) and tuple(sample["label"].shape) == (1, 32, 32)
    assert float(sample["label"].sum()) == label.sum()
    assert float(sample["image"].sum()) == pytest.approx(float(image.sum()), rel=1e-6)
