"""Tests of the preprocess stage: normalisation, settings, and the files and tables it writes."""

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from schema_settings import split_settings, synthetic_settings
from scipy import ndimage

from lesionflow.data.axis_columns import read_axis_columns
from lesionflow.data.geometry import (
    crop_box,
    field_of_view_box,
    resize_image,
    resize_mask,
    resize_scale,
    restore_map,
)
from lesionflow.data.intensity import normalise_channels, normalised
from lesionflow.data.manifest import read_manifest
from lesionflow.data.preprocess import IMAGE_COLUMNS, SETTING_KEYS, preprocess_settings, run_preprocess
from lesionflow.data.split import make_split
from lesionflow.data.synthetic import generate_dataset
from lesionflow.data.tiles import cut_tiles, tile_id, tile_origins
from lesionflow.io.readers import read_image, read_mask
from lesionflow.pipeline.config import complete_run_section, run_section_schema
from lesionflow.pipeline.errors import LesionflowError


def complete(partial: dict) -> dict:
    """A preprocess section as the pipeline hands it: the schema's defaults filled in."""
    return complete_run_section("preprocess", partial)


def test_normalisation_of_a_constant_channel_gives_zeros_not_nan():
    image = np.stack([np.full((4, 5), 0.3), np.arange(20).reshape(4, 5) / 20]).astype(np.float32)
    normalised, mean, std = normalise_channels(image)
    assert np.isfinite(normalised).all()
    assert np.all(normalised[0] == 0)
    assert std[0] == 0 and mean[0] == pytest.approx(0.3)
    assert normalised[1].mean() == pytest.approx(0, abs=1e-6)
    assert normalised[1].std() == pytest.approx(1, abs=1e-5)


def test_normalisation_with_given_statistics_uses_them():
    image = np.ones((2, 3, 3), dtype=np.float32)
    normalised, mean, std = normalise_channels(image, mean=np.array([0.5, 1.0]), std=np.array([0.25, 0.0]))
    assert np.allclose(normalised[0], 2.0) and np.allclose(normalised[1], 0.0)
    assert mean.tolist() == [0.5, 1.0] and std.tolist() == [0.25, 0.0]


def test_idrid_fov_box_and_tiles_of_a_downscaled_image(shared_dir):
    folder = shared_dir / "data" / "idrid-ex"
    if not folder.is_dir():
        pytest.skip("../shared/data/idrid-ex is absent")
    image = read_image(folder / "images" / "IDRiD_01.jpg").array
    mask = read_mask(folder / "masks" / "IDRiD_01_EX.jpg", channel=0, threshold=127).array
    height, width = mask.shape
    box = field_of_view_box(image)
    # the black margins left and right are cut off; the disc is cut at top and bottom
    assert box[1].start > 0.03 * width and box[1].stop < 0.97 * width
    assert box[1].stop - box[1].start < 0.9 * width
    assert box[0].stop - box[0].start > 0.9 * height
    assert mask[box].sum() == mask.sum()  # every lesion lies in the field of view

    scale = resize_scale(mask.shape, 1024)
    small_image, small_mask = resize_image(image, scale), resize_mask(mask, scale)
    assert small_image.shape[2] == 1024 and small_mask.shape == small_image.shape[1:]
    assert small_mask.shape[0] == round(height * 1024 / width)
    origins = tile_origins(small_mask.shape, 256, 256)
    expected = int(np.ceil(small_mask.shape[0] / 256)) * int(np.ceil(1024 / 256))
    assert len(origins) == expected
    lesion_pixels = [int(m.sum()) for _, _, m in cut_tiles(small_image, small_mask, origins, 256)]
    assert any(n == 0 for n in lesion_pixels) and any(n > 0 for n in lesion_pixels)


# ---------------------------------------------------------------- the stage


@pytest.fixture(scope="module")
def source_data(tmp_path_factory):
    """A synthetic dataset (subjects with 1-3 images) and its real subject-grouped split."""
    root = tmp_path_factory.mktemp("preprocess")
    manifest = generate_dataset(root / "data", **synthetic_settings(n_images=24, image_size=40, seed=3))
    split = make_split(read_manifest(manifest), **split_settings(seed=1))
    split.to_csv(root / "split.csv", index=False)
    return root, manifest, root / "split.csv", split


def test_tiles_of_one_source_image_never_land_in_two_splits(source_data):
    root, manifest, split_path, split = source_data
    out = root / "tiled"
    record = run_preprocess(manifest, split_path, complete({"tile_size": 16, "tile_stride": 12}), out)
    items = pd.read_csv(out / "split.csv", dtype=str)
    assert record["n_items"] == len(items) == 24 * 9
    source_split = dict(zip(split["image_id"], split["split"], strict=True))
    splits_per_source = items.groupby("source_image_id")["split"].agg(set)
    assert all(splits == {source_split[source]} for source, splits in splits_per_source.items())
    subjects_per_split = items.groupby("split")["subject"].agg(set)
    assert not subjects_per_split["train"] & (subjects_per_split["val"] | subjects_per_split["test"])
    assert not subjects_per_split["val"] & subjects_per_split["test"]
    # every tile carries its source image's subject
    source_subject = dict(zip(split["image_id"], split["subject"], strict=True))
    sources = zip(items["source_image_id"], items["subject"], strict=True)
    assert all(source_subject[s] == subj for s, subj in sources)


def test_tile_files_hold_the_cuts_of_the_image_and_lesion_free_tiles_are_kept(source_data):
    root, manifest, split_path, _ = source_data
    out = root / "cuts"
    run_preprocess(manifest, split_path, complete({"tile_size": 16}), out)
    items = read_manifest(out / "manifest.csv")
    first = read_manifest(manifest).iloc[0]
    image, mask = read_image(first["image"]).array, read_mask(first["mask"]).array
    tiles = items[items["source_image_id"] == first["image_id"]]
    origins = tile_origins(mask.shape, 16, 16)
    assert list(tiles["image_id"]) == [tile_id(first["image_id"], o) for o in origins]
    for row, (_, image_tile, mask_tile) in zip(
        tiles.to_dict("records"), cut_tiles(image, mask, origins, 16), strict=True
    ):
        np.testing.assert_allclose(read_image(row["image"]).array, image_tile, atol=1e-3)
        np.testing.assert_array_equal(read_mask(row["mask"]).array, mask_tile)
    positive = [bool(read_mask(path).array.any()) for path in items["mask"]]
    assert 0 < sum(positive) < len(positive)


def test_nothing_to_change_reads_the_source_files_without_copying(source_data):
    root, manifest, split_path, _ = source_data
    out = root / "identity"
    record = run_preprocess(manifest, split_path, complete({}), out)
    items = read_manifest(out / "manifest.csv")
    assert record["identity"] and list(items["image"]) == list(read_manifest(manifest)["image"])
    assert not (out / "images").exists() and not (out / "tiles").exists()
    images = read_axis_columns(pd.read_csv(out / "images.csv"))
    assert (images["scale"] == 1).all()
    for row in images.to_dict("records"):
        assert row["crop_start"] == (0, 0) and row["crop_stop"] == row["original_shape"] == row["shape"]
        assert row["spacing"] == row["original_spacing"] == (1.0, 1.0)


def test_cropped_resized_normalised_images_record_how_to_map_back(source_data):
    root, manifest, split_path, _ = source_data
    out = root / "resized"
    settings = {"crop_field_of_view": True, "max_size": 20, "normalise": "image"}
    run_preprocess(manifest, split_path, complete(settings), out)
    images = pd.read_csv(out / "images.csv", dtype={"image_id": str})
    assert images["crop_start"].iloc[0].startswith("[")  # one JSON list per cell, as written
    images = read_axis_columns(images)
    source = read_manifest(manifest).set_index("image_id")
    for row in images.head(4).to_dict("records"):
        image = read_image(row["image"]).array
        assert max(image.shape[1:]) == 20 and row["scale"] < 1
        np.testing.assert_allclose(image.mean(axis=(1, 2)), 0, atol=1e-2)
        mask = read_mask(source.loc[row["image_id"], "mask"]).array
        restored = restore_map(read_mask(row["mask"]).array.astype(np.float32), row)
        assert restored.shape == mask.shape
        # a box that cuts no lesion, and a mask that survives the round trip at coarse resolution
        assert mask[crop_box(row)].sum() == mask.sum()
        assert row["original_shape"] == mask.shape and row["shape"] == image.shape[1:]
        # a preprocessed pixel covers (box side / preprocessed side) original pixels
        sides = [stop - start for start, stop in zip(row["crop_start"], row["crop_stop"], strict=True)]
        expected = [side / n for side, n in zip(sides, row["shape"], strict=True)]
        assert row["spacing"] == pytest.approx(expected)
        if mask.sum() > 30:
            overlap = ((restored >= 0.5) & mask).sum()
            assert 2 * overlap / ((restored >= 0.5).sum() + mask.sum()) > 0.5


@pytest.mark.parametrize(
    ("settings", "key"),
    [
        ({"tile_sise": 16}, "preprocess.tile_sise"),
        ({"tile_stride": 8}, "preprocess.tile_stride"),
        ({"tile_size": 8, "tile_stride": 16}, "preprocess.tile_stride"),
        ({"max_size": 0}, "preprocess.max_size"),
        ({"normalise": "dataset"}, "preprocess.normalise"),
        ({"stitch_weights": "cosine"}, "preprocess.stitch_weights"),
    ],
)
def test_bad_preprocess_settings_name_the_key(settings, key):
    with pytest.raises(LesionflowError, match=key.replace(".", r"\.")):
        preprocess_settings(complete(settings))


def test_partial_settings_are_refused_not_filled_from_the_schema():
    with pytest.raises(LesionflowError, match=r"preprocess\.crop_field_of_view: missing"):
        preprocess_settings({"tile_size": 16})


def test_setting_keys_are_the_keys_of_the_schema_section():
    section, _ = run_section_schema("preprocess")
    assert SETTING_KEYS == tuple(section["properties"])


def test_complete_settings_pass_through_with_only_the_stride_derived():
    settings = complete({"tile_size": 16})
    resolved = preprocess_settings({"preprocess": settings})
    assert resolved == {**settings, "tile_stride": 16}


def head_volume(scale: float = 1.0) -> np.ndarray:
    """A (1, 14, 12, 10) MRI-like volume: air 0, a head of 200 with a dark 'ventricle' of 20 inside.

    ``scale`` multiplies the intensities, as a different scanner would.
    """
    image = np.zeros((1, 14, 12, 10), dtype=np.float32)
    image[0, 2:12, 2:10, 1:9] = 200
    image[0, 6:8, 5:7, 4:6] = 20
    image[0, 3, 3, 2] = 900  # one hot voxel
    return image * scale


def test_the_field_of_view_of_a_volume_in_scanner_units_is_the_head():
    for scale in (1.0, 37.5):
        assert field_of_view_box(head_volume(scale)) == (slice(2, 12), slice(2, 10), slice(1, 9))


@pytest.mark.parametrize("method", ["foreground", "percentile"])
def test_foreground_normalisation_uses_the_head_statistics_and_zeroes_the_air(method):
    image = head_volume()
    result = normalised(image, method)
    head = np.zeros(image.shape[1:], dtype=bool)
    head[2:12, 2:10, 1:9] = True
    assert np.all(result[0][~head] == 0)
    # The dark ventricle is inside the head: it is normalised, not zeroed as air.
    assert np.all(result[0, 6:8, 5:7, 4:6] < -1)
    assert result[0][head].mean() == pytest.approx(0, abs=1e-5)
    assert result[0][head].std() == pytest.approx(1, abs=1e-4)
    # The same head from a scanner with another intensity scale normalises alike.
    np.testing.assert_allclose(normalised(image * 7.0, method), result, atol=1e-4)


def test_percentile_normalisation_clips_a_hot_voxel_that_would_squash_the_rest():
    image = head_volume()
    clipped, plain = normalised(image, "percentile"), normalised(image, "foreground")
    head_values = np.s_[0, 2:12, 2:10, 1:9]
    assert clipped[0, 3, 3, 2] < plain[0, 3, 3, 2]
    assert np.ptp(clipped[head_values]) < np.ptp(plain[head_values])


def test_volumes_are_preprocessed_with_npy_masks_and_their_geometry_recorded(tmp_path):
    folder = tmp_path / "source"
    folder.mkdir()
    rows = []
    for name in ("a", "b"):
        affine = np.diag([0.8, 0.8, 2.0, 1.0])
        mask = np.zeros((14, 12, 10), dtype=np.uint8)
        mask[5, 5, 5] = 1
        nib.save(nib.Nifti1Image(head_volume()[0], affine), folder / f"{name}.nii.gz")
        nib.save(nib.Nifti1Image(mask, affine), folder / f"{name}_mask.nii.gz")
        rows.append(
            {"image_id": name, "subject": name, "image": f"{name}.nii.gz", "mask": f"{name}_mask.nii.gz"}
        )
    pd.DataFrame(rows).to_csv(folder / "manifest.csv", index=False)
    pd.DataFrame({"image_id": ["a", "b"], "subject": ["a", "b"], "split": ["train", "val"]}).to_csv(
        tmp_path / "split.csv", index=False
    )
    settings = complete({"crop_field_of_view": True, "normalise": "percentile"})
    run_preprocess(folder / "manifest.csv", tmp_path / "split.csv", settings, tmp_path / "out")
    images = read_axis_columns(pd.read_csv(tmp_path / "out" / "images.csv", dtype={"image_id": str}))
    row = images.set_index("image_id").loc["a"]
    assert row["original_shape"] == (14, 12, 10) and row["shape"] == (10, 8, 8)
    assert row["original_spacing"] == (0.8, 0.8, 2.0) and row["crop_start"] == (2, 2, 1)
    assert row["mask"].endswith(".npy") and row["lesion_pixels"] == 1
    assert read_mask(row["mask"]).array[3, 3, 4]
    assert read_image(row["image"]).array.shape == (1, 10, 8, 8)


def write_head_volumes(folder, spacing):
    """Two head volumes (``head_volume``) with a one-voxel lesion, and a split of them."""
    folder.mkdir()
    rows = []
    for name in ("a", "b"):
        affine = np.diag([*spacing, 1.0])
        mask = np.zeros((14, 12, 10), dtype=np.uint8)
        mask[6:8, 5:7, 4:6] = 1
        nib.save(nib.Nifti1Image(head_volume()[0], affine), folder / f"{name}.nii.gz")
        nib.save(nib.Nifti1Image(mask, affine), folder / f"{name}_mask.nii.gz")
        rows.append(
            {"image_id": name, "subject": name, "image": f"{name}.nii.gz", "mask": f"{name}_mask.nii.gz"}
        )
    pd.DataFrame(rows).to_csv(folder / "manifest.csv", index=False)
    pd.DataFrame({"image_id": ["a", "b"], "subject": ["a", "b"], "split": ["train", "val"]}).to_csv(
        folder / "split.csv", index=False
    )
    return folder / "manifest.csv", folder / "split.csv"


def test_volumes_are_resampled_to_the_target_spacing_and_map_back_to_their_grid(tmp_path):
    manifest, split = write_head_volumes(tmp_path / "source", (0.8, 0.8, 2.0))
    settings = complete({"target_spacing": [1.6, 1.6, 1.0]})
    run_preprocess(manifest, split, settings, tmp_path / "out")
    images = read_axis_columns(pd.read_csv(tmp_path / "out" / "images.csv", dtype={"image_id": str}))
    row = images.set_index("image_id").loc["a"]
    assert row["shape"] == (7, 6, 20) and row["spacing"] == pytest.approx((1.6, 1.6, 1.0))
    assert row["scale"] == pytest.approx((0.5 * 0.5 * 2.0) ** (1 / 3))
    resampled = read_mask(row["mask"]).array
    assert resampled.dtype == bool and resampled.sum() == 2 * 2
    # A map of the resampled grid goes back onto the 14 x 12 x 10 original.
    back = restore_map(resampled.astype(np.float32), images.set_index("image_id").loc["a"].to_dict())
    assert back.shape == (14, 12, 10)
    np.testing.assert_allclose(ndimage.center_of_mass(back), (6.5, 5.5, 4.5), atol=0.5)


def test_a_target_spacing_of_the_wrong_length_names_the_key_and_the_image(tmp_path):
    manifest, split = write_head_volumes(tmp_path / "source", (1.0, 1.0, 1.0))
    wrong = r"preprocess\.target_spacing: \[1\.0, 1\.0\] has 2 values.*a\.nii\.gz has 3"
    with pytest.raises(LesionflowError, match=wrong):
        run_preprocess(manifest, split, complete({"target_spacing": [1.0, 1.0]}), tmp_path / "out")


def test_further_images_of_a_case_become_channels_even_with_nothing_to_change(tmp_path):
    manifest, split = write_head_volumes(tmp_path / "source", (1.0, 1.0, 1.0))
    table = pd.read_csv(manifest)
    for name in ("a", "b"):
        nib.save(nib.Nifti1Image(head_volume(2.0)[0], np.eye(4)), tmp_path / "source" / f"{name}_t1.nii.gz")
    table.insert(3, "image_t1", [f"{name}_t1.nii.gz" for name in table["image_id"]])
    table.to_csv(manifest, index=False)
    run_preprocess(manifest, split, complete({}), tmp_path / "out")
    items = read_manifest(tmp_path / "out" / "manifest.csv")
    image = read_image(items.set_index("image_id").loc["a", "image"]).array
    assert image.shape == (2, 14, 12, 10)
    np.testing.assert_allclose(image[1], 2 * image[0])


# ---------------------------------------------------------------- scores and visits


@pytest.fixture(scope="module")
def scored_data(tmp_path_factory):
    """The synthetic dataset as the data stage writes it with a score column: score and visit."""
    root = tmp_path_factory.mktemp("scored")
    source = generate_dataset(root / "data", **synthetic_settings(n_images=12, image_size=32, seed=4))
    table = pd.read_csv(source, dtype=str, keep_default_na=False)
    table["score"] = [f"{i * 1.5}" for i in range(len(table))]
    table["visit"] = ["1", "02", ""] * 4
    table.to_csv(root / "data" / "manifest.csv", index=False)
    split = make_split(read_manifest(root / "data" / "manifest.csv"), **split_settings(seed=1))
    split.to_csv(root / "split.csv", index=False)
    scores = dict(zip(split["image_id"], table["score"], strict=True))
    visits = dict(zip(split["image_id"], table["visit"], strict=True))
    return root, root / "data" / "manifest.csv", root / "split.csv", scores, visits


@pytest.mark.parametrize(
    "settings",
    [{}, {"max_size": 24, "normalise": "image"}, {"tile_size": 16}],
    ids=["identity", "prepared", "tiled"],
)
def test_preprocess_carries_score_and_visit_of_each_source_image(scored_data, settings):
    root, manifest, split_path, scores, visits = scored_data
    out = root / "_".join(settings) if settings else root / "identity"
    run_preprocess(manifest, split_path, complete(settings), out)
    read = {"dtype": str, "keep_default_na": False}
    images = pd.read_csv(out / "images.csv", **read)
    assert list(images.columns[-2:]) == ["score", "visit"]
    assert images["score"].tolist() == [scores[i] for i in images["image_id"]]
    assert images["visit"].tolist() == [visits[i] for i in images["image_id"]]
    items = pd.read_csv(out / "manifest.csv", **read)
    assert len(items) >= len(images)
    assert items["score"].tolist() == [scores[i] for i in items["source_image_id"]]
    assert items["visit"].tolist() == [visits[i] for i in items["source_image_id"]]


def test_preprocess_without_scores_adds_no_score_or_visit_column(source_data):
    root, manifest, split_path, _ = source_data
    out = root / "no_scores"
    run_preprocess(manifest, split_path, complete({"max_size": 24}), out)
    assert list(pd.read_csv(out / "images.csv").columns) == IMAGE_COLUMNS
    assert not {"score", "visit"} & set(pd.read_csv(out / "manifest.csv").columns)
