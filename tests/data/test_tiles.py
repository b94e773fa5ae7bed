"""Tests of lesionflow.data.tiles: tile origins, cutting, stitching (against MONAI), tile rows."""

import numpy as np
import pytest
import torch
from monai.data.utils import dense_patch_slices
from monai.inferers import sliding_window_inference

from lesionflow.data.tiles import cut_tiles, stitch, tile_id, tile_origins, tile_rows
from lesionflow.pipeline.config import complete_run_section
from lesionflow.pipeline.errors import LesionflowError


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


def conv3d_network():
    """A fixed 3x3x3 convolution with zero padding and a sigmoid: its output depends on the window."""
    conv = torch.nn.Conv3d(1, 2, 3, padding=1)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        conv.weight.copy_(torch.randn(conv.weight.shape, generator=generator))
        conv.bias.copy_(torch.randn(conv.bias.shape, generator=generator))

    def network(batch: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return torch.sigmoid(conv(batch))

    return network


def monai_stride(tile, overlap):
    """The window step MONAI's sliding window takes for ``overlap`` (as infer.windows_of does)."""
    return tuple(max(1, int(size * (1 - overlap))) for size in tile)


def predicted_tiles(network, image, origins, tile):
    """The network's output for each tile of ``image``, one at a time."""
    for _, image_tile, _ in cut_tiles(image, image[0] > 0.5, origins, tile):
        yield network(torch.from_numpy(image_tile)[None])[0].numpy()


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
    weights = complete_run_section("preprocess", {})["stitch_weights"]
    np.testing.assert_allclose(stitch(tiles, origins, full.shape, weights), full, atol=1e-7)


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


@pytest.mark.parametrize(
    "shape, tile, stride",
    [((19, 23, 13), (8, 8, 8), (6, 6, 6)), ((20, 17, 9), (8, 10, 6), (6, 5, 4)), ((16, 16, 8), 8, 8)],
)
def test_3d_tile_origins_are_monai_window_placements_and_cover_every_voxel(shape, tile, stride):
    tiles = (tile,) * 3 if isinstance(tile, int) else tile
    strides = (stride,) * 3 if isinstance(stride, int) else stride
    origins = tile_origins(shape, tile, stride)
    monai_starts = [tuple(s.start for s in window) for window in dense_patch_slices(shape, tiles, strides)]
    assert sorted(origins) == sorted(monai_starts)
    count = np.zeros(shape, dtype=int)
    for origin in origins:
        count[tuple(slice(o, o + t) for o, t in zip(origin, tiles, strict=True))] += 1
    assert count.min() >= 1


@pytest.mark.parametrize("weights", ["uniform", "gaussian"])
def test_stitching_3d_tiles_cut_from_a_full_map_returns_that_map(weights):
    shape = (19, 23, 13)
    full = np.random.default_rng(3).random((2, *shape)).astype(np.float32)
    origins = tile_origins(shape, (8, 10, 6), (5, 7, 4))
    tiles = (image_tile for _, image_tile, _ in cut_tiles(full, full[0] > 0.5, origins, (8, 10, 6)))
    stitched = stitch(tiles, origins, shape, weights=weights)
    assert stitched.shape == full.shape
    np.testing.assert_allclose(stitched, full, rtol=0, atol=1e-6)


@pytest.mark.parametrize("mode, weights", [("gaussian", "gaussian"), ("constant", "uniform")])
@pytest.mark.parametrize(
    "shape, tile, overlap",
    [((19, 23, 13), (8, 8, 8), 0.25), ((20, 17, 11), (8, 10, 6), 0.5), ((16, 24, 8), (8, 8, 8), 0.0)],
)
def test_stitched_3d_windows_equal_monai_sliding_window_inference(mode, weights, shape, tile, overlap):
    # (19, 23, 13) and (20, 17, 11) are not multiples of the window or of its step; every side is
    # at least one window, so neither MONAI nor the tiles pad.
    network = conv3d_network()
    image = np.random.default_rng(4).random((1, *shape)).astype(np.float32)
    origins = tile_origins(shape, tile, monai_stride(tile, overlap))
    ours = stitch(predicted_tiles(network, image, origins, tile), origins, shape, weights=weights)
    theirs = sliding_window_inference(
        torch.from_numpy(image)[None], roi_size=tile, sw_batch_size=4, predictor=network,
        overlap=overlap, mode=mode,
    )[0].numpy()
    assert ours.shape == theirs.shape == (2, *shape)
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-5)
    if overlap > 0:
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
