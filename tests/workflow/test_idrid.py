"""The IDRiD example config end to end on real fundus photographs, reduced to fit CI.

Six of the twenty images, downscaled to 256 pixels and cut into 128-pixel tiles, one epoch of a
small UNet: it checks the artifacts and their resolutions, not the quality of the model.
"""

import json

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from lesionflow.data.axis_columns import read_axis_columns
from lesionflow.pipeline.artifacts import load_arrays, read_json

from .pipeline import REPO_ROOT, snakemake

pytestmark = pytest.mark.slow
N_IMAGES = 6


@pytest.fixture(scope="module")
def idrid(tmp_path_factory):
    folder = REPO_ROOT.parent / "shared" / "data" / "idrid-ex"
    if not (folder / "manifest.csv").is_file():
        pytest.skip("../shared/data/idrid-ex is absent")
    workdir = tmp_path_factory.mktemp("idrid")
    # A manifest of a few images with absolute paths, given by --config manifest=... as a user would.
    rows = pd.read_csv(folder / "manifest.csv", dtype=str).head(N_IMAGES)
    for column in ("image", "mask"):
        rows[column] = [str(folder / cell) for cell in rows[column]]
    rows.to_csv(workdir / "manifest.csv", index=False)
    config = yaml.safe_load((REPO_ROOT / "config" / "idrid-ex.yaml").read_text())
    config["split"] = {"train": 0.5, "val": 0.25, "test": 0.25, "seed": 0}
    config["defaults"]["preprocess"].update({"max_size": 256, "tile_size": 128, "tile_stride": 128})
    config["defaults"]["model"]["kwargs"] = {"channels": [8, 16], "strides": [2]}
    config["defaults"]["train"].update({"epochs": 1, "batch_size": 4})
    config["defaults"]["resources"] = {"threads": 1}
    (workdir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    snakemake(workdir, "--config", f"manifest={workdir / 'manifest.csv'}")
    keys = json.loads(
        max((workdir / ".lesionflow" / "plans").glob("*.json"), key=lambda p: p.stat().st_mtime)
        .read_text()
    )["runs"]["unet"]
    return workdir, keys, rows


def test_every_stage_ran_on_the_given_manifest(idrid):
    workdir, keys, rows = idrid
    data = pd.read_csv(workdir / f"results/data/{keys['data']}/manifest.csv", dtype=str)
    assert sorted(data["image_id"]) == sorted(p.rsplit("/", 1)[1].removesuffix(".jpg") for p in rows["image"])
    assert (workdir / "results/compare/leaderboard.csv").is_file()
    assert (workdir / "results/runs/unet/analysis.html").is_file()


def test_tiles_keep_their_source_images_split_and_lesion_free_tiles_exist(idrid):
    workdir, keys, _ = idrid
    folder = workdir / f"results/preprocess/{keys['preprocess']}"
    source = pd.read_csv(workdir / f"results/split/{keys['split']}/split.csv", dtype=str)
    tiles = pd.read_csv(folder / "split.csv", dtype=str)
    split_of = dict(zip(source["image_id"], source["split"], strict=True))
    assert all(split_of[s] == t for s, t in zip(tiles["source_image_id"], tiles["split"], strict=True))
    record = read_json(folder / "preprocess.json")
    assert record["n_images"] == N_IMAGES and record["lesion_free_items"] > 0
    images = read_axis_columns(pd.read_csv(folder / "images.csv"))
    assert all(shape[1] == 256 for shape in images["shape"]) and (images["scale"] < 0.1).all()
    # the field of view is narrower than the 4288-pixel photograph
    boxes = zip(images["crop_start"], images["crop_stop"], strict=True)
    assert all(stop[1] - start[1] < 4288 for start, stop in boxes)


def test_whole_image_maps_are_at_the_original_size_and_tiles_at_the_tile_size(idrid):
    workdir, keys, _ = idrid
    folder = workdir / f"results/infer/{keys['infer']}"
    images = load_arrays(folder / "test.npz")
    assert images and all(prob.shape == (2848, 4288) for prob in images.values())
    tiles = load_arrays(folder / "test_tiles.npz")
    assert len(tiles) > len(images) and all(prob.shape == (128, 128) for prob in tiles.values())
    for prob in images.values():
        assert np.isfinite(prob.astype(np.float32)).all() and 0 <= prob.min() and prob.max() <= 1
    record = read_json(folder / "test_infer.json")
    assert record["resolution"].startswith("original") and record["window"] == [128, 128]


def test_both_levels_are_scored_and_image_presence_auc_is_undefined_not_a_number(idrid):
    workdir, keys, _ = idrid
    folder = workdir / f"results/evaluate/{keys['evaluate']}"
    image_level, tile_level = read_json(folder / "summary.json"), read_json(folder / "summary_tiles.json")
    assert image_level["level"] == "image" and tile_level["level"] == "tile"
    # every IDRiD image holds exudates: no negatives among whole images, some among tiles
    assert image_level["test"]["presence_roc_auc"] is None
    assert image_level["test"]["presence_n_negative"] == 0
    assert tile_level["test"]["presence_n_negative"] > 0 and tile_level["test"]["n_gt_empty"] > 0
    per_image = pd.read_csv(folder / "per_image_test.csv")
    per_tile = pd.read_csv(folder / "per_tile_test.csv")
    assert len(per_tile) > len(per_image) > 0
    mask = Image.open(pd.read_csv(workdir / f"results/data/{keys['data']}/manifest.csv")["mask"][0])
    assert mask.size == (4288, 2848)
    leaderboard = pd.read_csv(workdir / "results/compare/leaderboard.csv")
    assert set(leaderboard["level"]) == {"image"}
