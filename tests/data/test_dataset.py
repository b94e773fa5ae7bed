"""Tests of manifest validation, image and mask loading, subsets, summaries and the data stage."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from lesionflow.data.dataset import (
    image_lesion_tables,
    lesion_presence,
    load_image,
    load_mask,
    load_subset,
    read_manifest,
    run_data,
    summarise_dataset,
)
from lesionflow.pipeline.errors import LesionflowError

IDRID = Path(__file__).resolve().parents[3] / "shared" / "data" / "idrid-ex"


def _write_pair(folder: Path, name: str, lesion_pixels: int = 0, size: int = 16) -> None:
    """An RGB image and a 0/255 mask with ``lesion_pixels`` lesion pixels in the first row(s).

    The image is a ramp, not a constant: the data stage refuses constant images.
    """
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "masks").mkdir(parents=True, exist_ok=True)
    image = np.full((size, size, 3), 60, dtype=np.uint8)
    image[..., 1] = np.arange(size, dtype=np.uint8)
    mask = np.zeros(size * size, dtype=np.uint8)
    mask[:lesion_pixels] = 255
    Image.fromarray(image).save(folder / "images" / f"{name}.png")
    Image.fromarray(mask.reshape(size, size)).save(folder / "masks" / f"{name}.png")


def _manifest(folder: Path, text: str) -> Path:
    path = folder / "manifest.csv"
    path.write_text(text)
    return path


@pytest.fixture()
def small(tmp_path) -> Path:
    """A valid manifest of three images from two subjects; one image is lesion-free."""
    for name, pixels in (("a", 5), ("b", 0), ("c", 12)):
        _write_pair(tmp_path, name, pixels)
    return _manifest(
        tmp_path,
        "image,mask,subject,scanner\n"
        "images/a.png,masks/a.png,0042,x\n"
        "images/b.png,masks/b.png,0042,y\n"
        "images/c.png,masks/c.png,0007,x\n",
    )


def test_read_manifest_resolves_paths_relative_to_its_folder_and_keeps_extras(small, monkeypatch):
    monkeypatch.chdir("/")
    frame = read_manifest(small)
    assert list(frame.columns) == ["image_id", "subject", "image", "mask", "scanner"]
    assert frame["image"].iloc[0] == str(small.parent / "images" / "a.png")
    assert all(Path(p).is_absolute() for p in [*frame["image"], *frame["mask"]])
    assert list(frame["scanner"]) == ["x", "y", "x"]


def test_subject_keeps_leading_zeros_and_image_id_defaults_to_file_stem(small):
    frame = read_manifest(small)
    assert list(frame["subject"]) == ["0042", "0042", "0007"]
    assert list(frame["image_id"]) == ["a", "b", "c"]


def test_image_id_column_is_used_when_present(small):
    _manifest(small.parent, "image_id,image,mask,subject\n0042_1,images/a.png,masks/a.png,0042\n")
    assert list(read_manifest(small)["image_id"]) == ["0042_1"]


def test_missing_manifest_error_names_file(tmp_path):
    with pytest.raises(LesionflowError, match=r"manifest .*nope\.csv: file not found"):
        read_manifest(tmp_path / "nope.csv")


def test_missing_column_error_names_file_and_column(small):
    _manifest(small.parent, "image,subject\nimages/a.png,0042\n")
    with pytest.raises(LesionflowError) as caught:
        read_manifest(small)
    message = str(caught.value)
    assert str(small) in message and "'mask'" in message and "\n" not in message


def test_missing_file_error_names_row_and_column(small):
    text = small.read_text().replace("masks/c.png", "masks/gone.png")
    _manifest(small.parent, text)
    with pytest.raises(
        LesionflowError,
        match=r"manifest .*manifest\.csv, row 4, column 'mask': "
        r"file .*gone\.png does not exist",
    ):
        read_manifest(small)


def test_empty_cell_error_names_row_and_column(small):
    _manifest(small.parent, "image,mask,subject\nimages/a.png,masks/a.png,\n")
    with pytest.raises(LesionflowError, match=r"row 2, column 'subject': expected a value"):
        read_manifest(small)


def test_duplicate_image_id_error_names_both_rows(small):
    _manifest(
        small.parent,
        "image,mask,subject\nimages/a.png,masks/a.png,1\nimages/b.png,masks/b.png,2\n"
        "images/a.png,masks/c.png,3\n",
    )
    with pytest.raises(LesionflowError, match=r"row 4, column 'image': image id 'a' .*row 2"):
        read_manifest(small)


def test_bad_mask_channel_cell_is_rejected(small):
    _manifest(small.parent, "image,mask,subject,mask_channel\nimages/a.png,masks/a.png,1,red\n")
    with pytest.raises(LesionflowError, match=r"row 2, column 'mask_channel': expected an integer"):
        read_manifest(small)


def test_empty_or_garbled_csv_is_a_user_error(tmp_path):
    with pytest.raises(LesionflowError, match="not a readable CSV"):
        read_manifest(_manifest(tmp_path, ""))


def test_load_image_gives_channel_first_float_in_unit_range(tmp_path):
    rgb = np.zeros((5, 7, 3), dtype=np.uint8)
    rgb[..., 1] = 255
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    Image.fromarray(np.full((5, 7), 51, dtype=np.uint8)).save(tmp_path / "grey.png")
    Image.fromarray(np.full((5, 7), 65535, dtype=np.uint16)).save(tmp_path / "grey16.png")
    colour = load_image(tmp_path / "rgb.png")
    assert colour.shape == (3, 5, 7) and colour.dtype == np.float32
    assert colour[1].min() == 1.0 and colour[0].max() == 0.0
    grey = load_image(tmp_path / "grey.png")
    assert grey.shape == (1, 5, 7) and grey.max() == pytest.approx(0.2)
    assert load_image(tmp_path / "grey16.png").max() == pytest.approx(1.0)


def test_corrupt_image_error_names_the_file(tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\nnot really a png")
    with pytest.raises(LesionflowError, match=r"cannot read image .*broken\.png"):
        load_image(bad)
    with pytest.raises(LesionflowError, match=r"cannot read mask .*broken\.png"):
        load_mask(bad)


def test_jpeg_mask_is_binarised(tmp_path):
    truth = np.zeros((64, 64), dtype=bool)
    truth[10:30, 20:50] = True
    truth[40:44, 5:9] = True
    Image.fromarray(truth.astype(np.uint8) * 255).save(tmp_path / "mask.jpg", quality=30)
    raw = np.asarray(Image.open(tmp_path / "mask.jpg"))
    assert not np.isin(raw, (0, 255)).all()  # the JPEG really has artefacts to ignore
    mask = load_mask(tmp_path / "mask.jpg")
    assert mask.dtype == bool and mask.shape == (64, 64)
    np.testing.assert_array_equal(mask, truth)


def test_mask_cut_is_at_128_on_the_8_bit_scale(tmp_path):
    Image.fromarray(np.array([[127, 128, 0, 255]], dtype=np.uint8)).save(tmp_path / "m.png")
    assert load_mask(tmp_path / "m.png").tolist() == [[False, True, False, True]]


def test_label_mask_with_values_0_and_1_is_read_as_lesion(tmp_path):
    Image.fromarray(np.array([[0, 1, 1, 0]], dtype=np.uint8)).save(tmp_path / "m.png")
    assert load_mask(tmp_path / "m.png").tolist() == [[False, True, True, False]]


def test_red_on_black_mask_needs_its_channel(tmp_path):
    mask = np.zeros((8, 8, 3), dtype=np.uint8)
    mask[2:4, 2:4, 0] = 255
    Image.fromarray(mask).save(tmp_path / "red.png")
    with pytest.raises(LesionflowError, match=r"red\.png is a colour image.*mask_channel"):
        load_mask(tmp_path / "red.png")
    assert load_mask(tmp_path / "red.png", channel=0).sum() == 4
    assert load_mask(tmp_path / "red.png", channel=1).sum() == 0


def test_load_subset_returns_the_subset_in_split_order(small):
    manifest = read_manifest(small)
    split = pd.DataFrame(
        {
            "image_id": ["c", "b", "a"],
            "subject": ["0007", "0042", "0042"],
            "split": ["test", "train", "train"],
            "lesion_positive": [True, False, True],
        }
    )
    ids, images, masks = load_subset(manifest, split, "train")
    assert ids == ["b", "a"]
    assert [image.shape for image in images] == [(3, 16, 16)] * 2
    assert [int(mask.sum()) for mask in masks] == [0, 5]
    assert load_subset(manifest, split, "val") == ([], [], [])
    with pytest.raises(LesionflowError, match="subset"):
        load_subset(manifest, split, "training")


def test_load_subset_rejects_a_mask_of_another_size(small):
    _write_pair(small.parent, "small_mask", 3, size=8)
    (small.parent / "masks" / "small_mask.png").replace(small.parent / "masks" / "a.png")
    manifest = read_manifest(small)
    split = pd.DataFrame({"image_id": ["a"], "subject": ["0042"], "split": ["val"]})
    with pytest.raises(LesionflowError, match=r"mask .*a\.png is 8x8 but its image .* is 16x16"):
        load_subset(manifest, split, "val")


def test_lesion_presence_is_indexed_by_image_id(small):
    presence = lesion_presence(read_manifest(small))
    assert presence.to_dict() == {"a": True, "b": False, "c": True}
    assert presence.dtype == bool


def test_image_and_lesion_tables_hold_one_row_per_image_and_per_lesion(small):
    images, lesions = image_lesion_tables(read_manifest(small))
    assert images["image_id"].tolist() == ["a", "b", "c"]
    assert images.set_index("image_id")["n_lesions"].to_dict() == {"a": 1, "b": 0, "c": 1}
    assert sorted(lesions["lesion_pixels"]) == [5, 12]
    free = images.set_index("image_id").loc["b"]
    assert free["lesion_pixels"] == 0 and free["lesion_fraction"] == 0


def test_summarise_dataset_counts_images_subjects_and_lesion_pixels(small):
    summary = summarise_dataset(*image_lesion_tables(read_manifest(small)))
    assert summary["n_images"] == 3 and summary["n_subjects"] == 2
    assert summary["n_lesion_free"] == 1 and summary["lesion_free_fraction"] == pytest.approx(1 / 3)
    assert summary["lesion_pixels_per_positive_image"]["min"] == 5
    assert summary["lesion_pixels_per_positive_image"]["max"] == 12
    assert summary["n_lesions"] == 2


def test_run_data_synthetic_writes_images_manifest_and_summary(tmp_path):
    settings = {
        "source": "synthetic",
        "manifest": None,
        "synthetic": {"n_images": 10, "image_size": 32, "lesion_free_fraction": 0.4, "seed": 1},
    }
    run_data(settings, tmp_path / "out")
    frame = read_manifest(tmp_path / "out" / "manifest.csv")
    assert len(frame) == 10
    summary = json.loads((tmp_path / "out" / "data_summary.json").read_text())
    images = pd.read_csv(tmp_path / "out" / "images.csv", dtype={"image_id": str})
    assert len(images) == 10 and images["lesion_pixels"].sum() > 0
    assert (tmp_path / "out" / "lesions.csv").stat().st_size > 0
    assert summary["source"] == "synthetic" and summary["n_lesion_free"] == 4


def test_run_data_manifest_writes_absolute_paths_without_copying_images(small, tmp_path):
    out = tmp_path / "out"
    run_data({"source": "manifest", "manifest": str(small)}, out)
    written = pd.read_csv(out / "manifest.csv", dtype=str)
    assert written["subject"].tolist() == ["0042", "0042", "0007"]
    assert written["image"].iloc[2] == str(small.parent / "images" / "c.png")
    assert not (out / "images").exists()
    assert json.loads((out / "data_summary.json").read_text())["n_lesion_positive"] == 2


def test_run_data_mask_channel_setting_reaches_every_later_reader(tmp_path):
    source = tmp_path / "user"
    _write_pair(source, "red")
    mask = np.zeros((16, 16, 3), dtype=np.uint8)
    mask[:3, :3, 0] = 255
    Image.fromarray(mask).save(source / "masks" / "red.png")
    manifest = _manifest(source, "image,mask,subject\nimages/red.png,masks/red.png,s1\n")
    with pytest.raises(LesionflowError, match="mask_channel"):
        run_data({"source": "manifest", "manifest": str(manifest)}, tmp_path / "refused")
    run_data({"source": "manifest", "manifest": str(manifest), "mask_channel": 0}, tmp_path / "ok")
    written = read_manifest(tmp_path / "ok" / "manifest.csv")
    assert lesion_presence(written).to_dict() == {"red": True}


@pytest.mark.parametrize(
    ("settings", "key"),
    [
        ({"source": "dicom"}, r"data\.source"),
        ({"source": "manifest"}, r"data\.manifest"),
        ({"source": "synthetic", "synthetic": {"n_image": 3}}, r"data\.synthetic\.n_image"),
        ({"source": "manifest", "manifest": "x.csv", "mask_channel": 3}, r"data\.mask_channel"),
    ],
)
def test_bad_data_settings_error_names_the_key(tmp_path, settings, key):
    if settings.get("manifest") == "x.csv":
        _write_pair(tmp_path, "a")
        settings["manifest"] = str(
            _manifest(tmp_path, "image,mask,subject\nimages/a.png,masks/a.png,1\n")
        )
    with pytest.raises(LesionflowError, match=key):
        run_data(settings, tmp_path / "out")


def test_real_idrid_images_and_red_on_black_jpeg_masks_load():
    if not (IDRID / "manifest.csv").is_file():
        pytest.skip(f"real dataset not present at {IDRID}")
    manifest = read_manifest(IDRID / "manifest.csv")
    assert len(manifest) == 20 and manifest["subject"].is_unique
    row = manifest.iloc[0]
    image = load_image(row["image"])
    assert image.shape == (3, 2848, 4288) and 0.0 <= image.min() and image.max() <= 1.0
    # A red-on-black JPEG mask is refused without a channel, never silently emptied.
    with pytest.raises(LesionflowError, match="mask_channel"):
        load_mask(row["mask"])
    mask = load_mask(row["mask"], channel=0)
    assert mask.shape == image.shape[1:]
    assert 0.0005 <= mask.mean() <= 0.066
