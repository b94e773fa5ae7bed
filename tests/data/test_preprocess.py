"""Tests of lesionflow.data.preprocess: FOV crop, resize, normalisation, tiling and stitching."""

import numpy as np
import pandas as pd
import pytest
import torch
from monai.data.utils import dense_patch_slices
from monai.inferers import sliding_window_inference

from lesionflow.data import dataset
from lesionflow.data.preprocess import (
    cut_tiles,
    field_of_view_box,
    normalise_channels,
    preprocess_settings,
    resize_image,
    resize_mask,
    resize_scale,
    restore_map,
    run_preprocess,
    stitch,
    tile_id,
    tile_origins,
    tile_rows,
)
from lesionflow.data.split import make_split
from lesionflow.data.synthetic import generate_dataset
from lesionflow.pipeline.errors import LesionflowError


def disc_image(height=60, width=90, centre=(30, 45), radius=25):
    """A 3-channel bright disc on black, cut at top and bottom like a fundus photograph."""
    yy, xx = np.mgrid[:height, :width]
    disc = (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= radius**2
    image = np.zeros((3, height, width), dtype=np.float32)
    image[:, disc] = np.array([0.8, 0.4, 0.2], dtype=np.float32)[:, None]
    return image


def covered(shape, origins, tile):
    count = np.zeros(shape, dtype=int)
    for y, x in origins:
        count[y : y + tile, x : x + tile] += 1
    return count


def conv_network():
    """A fixed 3x3 convolution with zero padding and a sigmoid: its output depends on the window."""
    conv = torch.nn.Conv2d(1, 2, 3, padding=1)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        conv.weight.copy_(torch.randn(conv.weight.shape, generator=generator))
        conv.bias.copy_(torch.randn(conv.bias.shape, generator=generator))

    def network(batch: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return torch.sigmoid(conv(batch))

    return network


def predicted_tiles(network, image, origins, tile):
    """The network's output for each tile of ``image``, one at a time."""
    for _, image_tile, _ in cut_tiles(image, image[0] > 0.5, origins, tile):
        yield network(torch.from_numpy(image_tile)[None])[0].numpy()


def test_fov_box_bounds_the_disc_and_ignores_noise_specks():
    image = disc_image()
    image[:, 2, 2] = 1.0  # specks in the black surround
    image[1, 55, 85] = 0.9
    image[:, 10:12, 80:82] = 0.7  # a 2x2 speck, removed by the opening
    box = field_of_view_box(image)
    assert box == (slice(5, 56), slice(20, 71))


def test_fov_box_is_the_whole_image_when_it_is_black():
    image = np.zeros((1, 20, 30), dtype=np.float32)
    assert field_of_view_box(image) == (slice(0, 20), slice(0, 30))


def test_resize_scale_brings_the_longest_side_to_max_size_and_never_enlarges():
    assert resize_scale((2848, 4288), 1024) == pytest.approx(1024 / 4288)
    assert resize_scale((100, 50), 200) == 1.0
    with pytest.raises(LesionflowError, match="preprocess.max_size"):
        resize_scale((10, 10), 0)


def test_resize_keeps_aspect_and_the_mask_stays_binary():
    image = disc_image(60, 90)
    mask = image[0] > 0
    scale = resize_scale(mask.shape, 30)
    small_image, small_mask = resize_image(image, scale), resize_mask(mask, scale)
    assert small_image.shape == (3, 20, 30)
    assert small_mask.shape == (20, 30)
    assert small_mask.dtype == bool
    # area-averaging keeps the lesion area up to the pixels on its outline
    assert abs(small_mask.sum() * 9 - mask.sum()) < 0.1 * mask.sum()
    assert small_image.max() <= 0.8 + 1e-6 and small_image.min() >= 0.0


def test_resize_by_one_is_a_no_op():
    image = disc_image(8, 12)
    mask = image[0] > 0
    assert resize_image(image, 1.0) is image
    assert resize_mask(mask, 1.0) is mask


def test_upscaled_mask_stays_binary():
    mask = np.zeros((4, 6), dtype=bool)
    mask[1:3, 2:4] = True
    big = resize_mask(mask, 2.0)
    assert big.shape == (8, 12) and big.dtype == bool
    assert big[3, 5] and not big[0, 0]


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


@pytest.mark.parametrize("shape", [(37, 50), (32, 48), (16, 16)])
@pytest.mark.parametrize("stride", [5, 8, 16])
def test_tile_origins_cover_every_pixel_and_the_last_tile_is_flush(shape, stride):
    origins = tile_origins(shape, 16, stride)
    assert covered(shape, origins, 16).min() >= 1
    assert max(y for y, _ in origins) == shape[0] - 16
    assert max(x for _, x in origins) == shape[1] - 16
    assert all(0 <= y <= shape[0] - 16 and 0 <= x <= shape[1] - 16 for y, x in origins)


def test_tile_origins_with_stride_equal_to_tile_do_not_overlap():
    origins = tile_origins((32, 48), 16, 16)
    assert len(origins) == 6
    assert covered((32, 48), origins, 16).max() == 1


def test_tile_origins_are_monai_window_placements():
    for shape, tile, stride in [((37, 50), 16, 5), ((32, 48), 16, 8), ((40, 52), 16, 12)]:
        windows = dense_patch_slices(shape, (tile, tile), (stride, stride))
        monai_starts = [(window[0].start, window[1].start) for window in windows]
        assert sorted(tile_origins(shape, tile, stride)) == sorted(monai_starts)


def test_an_image_smaller_than_a_tile_is_one_tile_padded_with_zeros():
    image = np.ones((2, 5, 7), dtype=np.float32)
    mask = np.ones((5, 7), dtype=bool)
    origins = tile_origins((5, 7), 8, 4)
    assert origins == [(0, 0)]
    [(origin, image_tile, mask_tile)] = list(cut_tiles(image, mask, origins, 8))
    assert image_tile.shape == (2, 8, 8) and mask_tile.shape == (8, 8)
    assert np.all(image_tile[:, :5, :7] == 1)
    assert image_tile[:, 5:].sum() == 0 and image_tile[:, :, 7:].sum() == 0
    assert mask_tile.sum() == 35 and mask_tile.dtype == bool


def test_tile_size_and_stride_errors_name_the_config_keys():
    with pytest.raises(LesionflowError, match="preprocess.tile_size"):
        tile_origins((10, 10), 0, 1)
    with pytest.raises(LesionflowError, match="preprocess.tile_size"):
        tile_origins((10, 10), 2.5, 1)
    with pytest.raises(LesionflowError, match="preprocess.tile_stride"):
        tile_origins((10, 10), 4, -1)
    with pytest.raises(LesionflowError, match="preprocess.tile_stride.*larger than preprocess.tile_size"):
        tile_origins((10, 10), 4, 5)
    with pytest.raises(LesionflowError, match="preprocess.stitch_weights"):
        stitch([np.zeros((4, 4))], [(0, 0)], (4, 4), weights="median")


def test_cut_tiles_yields_the_crops_at_each_origin_one_at_a_time():
    rng = np.random.default_rng(0)
    image = rng.random((3, 20, 30)).astype(np.float32)
    mask = rng.random((20, 30)) > 0.5
    origins = tile_origins((20, 30), 8, 6)
    tiles = cut_tiles(image, mask, origins, 8)
    assert iter(tiles) is tiles  # a generator, not a list of every tile
    seen = 0
    for (y, x), image_tile, mask_tile in tiles:
        assert np.array_equal(image_tile, image[:, y : y + 8, x : x + 8])
        assert np.array_equal(mask_tile, mask[y : y + 8, x : x + 8])
        seen += 1
    assert seen == len(origins)


@pytest.mark.parametrize("weights", ["uniform", "gaussian"])
@pytest.mark.parametrize("shape, stride", [((32, 48), 8), ((37, 50), 5), ((32, 48), 16)])
def test_stitching_tiles_cut_from_a_full_map_returns_that_map(weights, shape, stride):
    rng = np.random.default_rng(1)
    full = rng.random((2, *shape)).astype(np.float32)
    origins = tile_origins(shape, 16, stride)
    tiles = (image_tile for _, image_tile, _ in cut_tiles(full, full[0] > 0.5, origins, 16))
    stitched = stitch(tiles, origins, shape, weights=weights)
    assert stitched.dtype == np.float32 and stitched.shape == full.shape
    np.testing.assert_allclose(stitched, full, rtol=0, atol=1e-6)


def test_stitching_drops_the_padding_of_a_tile_larger_than_the_image():
    full = np.linspace(0, 1, 35, dtype=np.float32).reshape(5, 7)
    origins = tile_origins(full.shape, 8, 8)
    tiles = [image_tile[0] for _, image_tile, _ in cut_tiles(full[None], full > 0, origins, 8)]
    np.testing.assert_allclose(stitch(tiles, origins, full.shape), full, atol=1e-7)


@pytest.mark.parametrize("mode, weights", [("gaussian", "gaussian"), ("constant", "uniform")])
@pytest.mark.parametrize("shape, stride", [((32, 48), 8), ((48, 64), 12), ((40, 52), 12)])
def test_stitched_windows_equal_monai_sliding_window_inference(mode, weights, shape, stride):
    # (32, 48) and (48, 64) are exact multiples of the stride; (40, 52) is not, and the windows
    # still agree because both flush the last window with the border.
    tile = 16
    network = conv_network()
    rng = np.random.default_rng(2)
    image = rng.random((1, *shape)).astype(np.float32)
    origins = tile_origins(shape, tile, stride)
    ours = stitch(predicted_tiles(network, image, origins, tile), origins, shape, weights=weights)
    theirs = sliding_window_inference(
        torch.from_numpy(image)[None],
        roi_size=(tile, tile),
        sw_batch_size=4,
        predictor=network,
        overlap=1 - stride / tile,
        mode=mode,
    )[0].numpy()
    assert ours.shape == theirs.shape == (2, *shape)
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-5)
    # the windows disagree (zero padding at their borders), so the weighting is what is compared
    if stride < tile:
        other = "uniform" if weights == "gaussian" else "gaussian"
        reweighted = stitch(predicted_tiles(network, image, origins, tile), origins, shape, weights=other)
        assert np.abs(reweighted - ours).max() > 1e-3


def test_tile_ids_and_rows_keep_the_source_image_and_subject():
    assert tile_id("IDRiD_01", (512, 1024)) == "IDRiD_01_t0512_1024"
    origins = tile_origins((20, 30), 16, 16)
    rows = tile_rows("img7", "patient-0042", origins)
    assert [row["image_id"] for row in rows] == [tile_id("img7", o) for o in origins]
    assert len({row["image_id"] for row in rows}) == len(origins)
    assert all(row["subject"] == "patient-0042" and row["source_image_id"] == "img7" for row in rows)
    assert [(row["origin_y"], row["origin_x"]) for row in rows] == origins
    assert set(rows[0]) == {"image_id", "source_image_id", "subject", "origin_y", "origin_x"}


def test_idrid_fov_box_and_tiles_of_a_downscaled_image(shared_dir):
    folder = shared_dir / "data" / "idrid-ex"
    if not folder.is_dir():
        pytest.skip("../shared/data/idrid-ex is absent")
    image = dataset.load_image(folder / "images" / "IDRiD_01.jpg")
    mask = dataset.load_mask(folder / "masks" / "IDRiD_01_EX.jpg", channel=0, threshold=127)
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
    manifest = generate_dataset(root / "data", n_images=24, image_size=40, seed=3)
    split = make_split(dataset.read_manifest(manifest), seed=1)
    split.to_csv(root / "split.csv", index=False)
    return root, manifest, root / "split.csv", split


def test_tiles_of_one_source_image_never_land_in_two_splits(source_data):
    root, manifest, split_path, split = source_data
    out = root / "tiled"
    record = run_preprocess(manifest, split_path, {"tile_size": 16, "tile_stride": 12}, out)
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
    run_preprocess(manifest, split_path, {"tile_size": 16}, out)
    items = dataset.read_manifest(out / "manifest.csv")
    first = dataset.read_manifest(manifest).iloc[0]
    image, mask = dataset.load_image(first["image"]), dataset.load_mask(first["mask"])
    tiles = items[items["source_image_id"] == first["image_id"]]
    origins = tile_origins(mask.shape, 16, 16)
    assert list(tiles["image_id"]) == [tile_id(first["image_id"], o) for o in origins]
    for row, (_, image_tile, mask_tile) in zip(
        tiles.to_dict("records"), cut_tiles(image, mask, origins, 16), strict=True
    ):
        np.testing.assert_allclose(dataset.load_image(row["image"]), image_tile, atol=1e-3)
        np.testing.assert_array_equal(dataset.load_mask(row["mask"]), mask_tile)
    positive = [bool(dataset.load_mask(path).any()) for path in items["mask"]]
    assert 0 < sum(positive) < len(positive)


def test_nothing_to_change_reads_the_source_files_without_copying(source_data):
    root, manifest, split_path, _ = source_data
    out = root / "identity"
    record = run_preprocess(manifest, split_path, {}, out)
    items = dataset.read_manifest(out / "manifest.csv")
    assert record["identity"] and list(items["image"]) == list(dataset.read_manifest(manifest)["image"])
    assert not (out / "images").exists() and not (out / "tiles").exists()
    images = pd.read_csv(out / "images.csv")
    assert (images["scale"] == 1).all() and (images["crop_y1"] == images["original_height"]).all()


def test_cropped_resized_normalised_images_record_how_to_map_back(source_data):
    root, manifest, split_path, _ = source_data
    out = root / "resized"
    settings = {"crop_field_of_view": True, "max_size": 20, "normalise": "image"}
    run_preprocess(manifest, split_path, settings, out)
    images = pd.read_csv(out / "images.csv", dtype={"image_id": str})
    source = dataset.read_manifest(manifest).set_index("image_id")
    for row in images.head(4).to_dict("records"):
        image = dataset.load_image(row["image"])
        assert max(image.shape[1:]) == 20 and row["scale"] < 1
        np.testing.assert_allclose(image.mean(axis=(1, 2)), 0, atol=1e-2)
        mask = dataset.load_mask(source.loc[row["image_id"], "mask"])
        restored = restore_map(dataset.load_mask(row["mask"]).astype(np.float32), row)
        assert restored.shape == mask.shape
        # a box that cuts no lesion, and a mask that survives the round trip at coarse resolution
        assert mask[row["crop_y0"] : row["crop_y1"], row["crop_x0"] : row["crop_x1"]].sum() == mask.sum()
        if mask.sum() > 30:
            overlap = ((restored >= 0.5) & mask).sum()
            assert 2 * overlap / ((restored >= 0.5).sum() + mask.sum()) > 0.5


def test_restore_map_pastes_into_the_box_and_leaves_the_rest_zero():
    row = {
        "crop_y0": 2, "crop_y1": 8, "crop_x0": 4, "crop_x1": 10,
        "original_height": 12, "original_width": 14,
    }
    full = restore_map(np.ones((3, 3), dtype=np.float32), row)
    assert full.shape == (12, 14)
    assert full[2:8, 4:10].min() == 1 and full.sum() == 36


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
        preprocess_settings(settings)
