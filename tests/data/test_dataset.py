"""Tests of the data stage: image and lesion tables, summary, run_data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from manifests import small_manifest, write_manifest, write_pair
from PIL import Image
from schema_settings import synthetic_settings, top_level_section

from lesionflow.data import synthetic
from lesionflow.data.axis_columns import read_axis_columns
from lesionflow.data.dataset import (
    GENERATORS,
    IMAGE_TABLE_COLUMNS,
    image_lesion_tables,
    run_data,
    summarise_dataset,
)
from lesionflow.data.manifest import lesion_presence, read_manifest
from lesionflow.data.manifest_check import ManifestProblems
from lesionflow.data.score_column import SCORE_KEYS
from lesionflow.io.readers import read_geometry, read_image, read_mask
from lesionflow.pipeline.errors import LesionflowError

IDRID = Path(__file__).resolve().parents[3] / "shared" / "data" / "idrid-ex"


def data_settings(**given) -> dict:
    """``given`` data settings with the score keys the plan always passes (schema defaults: no score)."""
    defaults = top_level_section("data")
    return {**{key: defaults[key] for key in SCORE_KEYS}, **given}


@pytest.fixture()
def small(tmp_path) -> Path:
    """A valid manifest of three images from two subjects; one image is lesion-free."""
    return small_manifest(tmp_path)


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
    settings = data_settings(
        source="synthetic",
        manifest=None,
        synthetic={
            "kind": "fundus", "n_images": 10, "image_size": 32, "lesion_free_fraction": 0.4, "seed": 1,
        },
    )
    run_data(settings, tmp_path / "out")
    frame = read_manifest(tmp_path / "out" / "manifest.csv")
    assert len(frame) == 10
    summary = json.loads((tmp_path / "out" / "data_summary.json").read_text())
    images = pd.read_csv(tmp_path / "out" / "images.csv", dtype={"image_id": str})
    assert len(images) == 10 and images["lesion_pixels"].sum() > 0
    assert list(images.columns) == list(IMAGE_TABLE_COLUMNS)
    assert (read_axis_columns(images)["shape"] == (32, 32)).all()
    assert (read_axis_columns(images)["spacing"] == (1.0, 1.0)).all()
    assert (tmp_path / "out" / "lesions.csv").stat().st_size > 0
    assert summary["source"] == "synthetic" and summary["n_lesion_free"] == 4


def test_run_data_manifest_writes_absolute_paths_without_copying_images(small, tmp_path):
    out = tmp_path / "out"
    run_data(data_settings(source="manifest", manifest=str(small)), out)
    written = pd.read_csv(out / "manifest.csv", dtype=str)
    assert written["subject"].tolist() == ["0042", "0042", "0007"]
    assert written["image"].iloc[2] == str(small.parent / "images" / "c.png")
    assert not (out / "images").exists()
    assert json.loads((out / "data_summary.json").read_text())["n_lesion_positive"] == 2


def test_run_data_mask_channel_setting_reaches_every_later_reader(tmp_path):
    source = tmp_path / "user"
    write_pair(source, "red")
    mask = np.zeros((16, 16, 3), dtype=np.uint8)
    mask[:3, :3, 0] = 255
    Image.fromarray(mask).save(source / "masks" / "red.png")
    manifest = write_manifest(source, "image,mask,subject\nimages/red.png,masks/red.png,s1\n")
    with pytest.raises(LesionflowError, match="mask_channel"):
        run_data(data_settings(source="manifest", manifest=str(manifest)), tmp_path / "refused")
    run_data(data_settings(source="manifest", manifest=str(manifest), mask_channel=0), tmp_path / "ok")
    written = read_manifest(tmp_path / "ok" / "manifest.csv")
    assert lesion_presence(written).to_dict() == {"red": True}


@pytest.mark.parametrize(
    ("settings", "key"),
    [
        ({"source": "dicom"}, r"data\.source"),
        ({"source": "manifest"}, r"data\.manifest"),
        (
            {"source": "synthetic", "synthetic": {**synthetic_settings(), "n_image": 3}},
            r"data\.synthetic\.n_image:",
        ),
        (
            {"source": "synthetic", "synthetic": {"kind": "fundus", "n_images": 12}},
            r"missing data\.synthetic\.image_size, ",
        ),
        (
            {"source": "synthetic", "synthetic": {**synthetic_settings(), "kind": "retina"}},
            r"data\.synthetic\.kind: expected one of fundus, brain(, loes)?, got 'retina'",
        ),
        ({"source": "synthetic"}, r"'data\.synthetic', got None"),
        ({"source": "manifest", "manifest": "x.csv", "mask_channel": 3}, r"data\.mask_channel"),
    ],
)
def test_bad_data_settings_error_names_the_key(tmp_path, settings, key):
    if settings.get("manifest") == "x.csv":
        write_pair(tmp_path, "a")
        settings["manifest"] = str(
            write_manifest(tmp_path, "image,mask,subject\nimages/a.png,masks/a.png,1\n")
        )
    with pytest.raises(LesionflowError, match=key):
        run_data(data_settings(**settings), tmp_path / "out")


def test_real_idrid_images_and_red_on_black_jpeg_masks_load():
    if not (IDRID / "manifest.csv").is_file():
        pytest.skip(f"real dataset not present at {IDRID}")
    manifest = read_manifest(IDRID / "manifest.csv")
    assert len(manifest) == 20 and manifest["subject"].is_unique
    row = manifest.iloc[0]
    image = read_image(row["image"]).array
    assert image.shape == (3, 2848, 4288) and 0.0 <= image.min() and image.max() <= 1.0
    # A red-on-black JPEG mask is refused without a channel, never silently emptied.
    with pytest.raises(LesionflowError, match="mask_channel"):
        read_mask(row["mask"])
    mask = read_mask(row["mask"], channel=0).array
    assert mask.shape == image.shape[1:]
    assert 0.0005 <= mask.mean() <= 0.066


def test_the_built_in_brain_volumes_get_3d_shape_spacing_and_affine_in_the_image_table(tmp_path):
    settings = data_settings(
        source="synthetic",
        manifest=None,
        synthetic={
            "kind": "brain", "n_images": 12, "image_size": 32, "lesion_free_fraction": 0.25, "seed": 2,
        },
    )
    run_data(settings, tmp_path / "out")
    images = read_axis_columns(pd.read_csv(tmp_path / "out" / "images.csv", dtype={"image_id": str}))
    manifest = read_manifest(tmp_path / "out" / "manifest.csv").set_index("image_id")
    assert list(images.columns) == list(IMAGE_TABLE_COLUMNS) and (images["lesion_pixels"] == 0).sum() == 3
    for row in images.to_dict("records"):
        geometry = read_geometry(manifest.loc[row["image_id"], "image"])
        assert row["shape"] == geometry.shape and row["spacing"] == geometry.spacing
        np.testing.assert_allclose(json.loads(row["affine"]), geometry.affine, atol=1e-6)


def scored_source(folder: Path, scores: list[str], visits: list[str] | None = None) -> Path:
    """A manifest of one picture per score cell, in column ``loes``, subjects s0, s0, s1, s1, ..."""
    header = "image,mask,subject,loes" + (",visit" if visits else "")
    rows = []
    for i, cell in enumerate(scores):
        write_pair(folder, f"p{i}", lesion_pixels=i)
        visit = f",{visits[i]}" if visits else ""
        rows.append(f"images/p{i}.png,masks/p{i}.png,s{i // 2},{cell}{visit}")
    return write_manifest(folder, "\n".join([header, *rows]) + "\n")


def scored_settings(manifest: Path, **given) -> dict:
    return data_settings(source="manifest", manifest=str(manifest), score_column="loes", **given)


def test_a_score_column_adds_score_and_visit_to_the_manifest_and_score_to_images_and_summary(tmp_path):
    manifest = scored_source(tmp_path / "user", ["0", "2.5", "7", "31"], visits=["1", "02", "1", ""])
    run_data(scored_settings(manifest, score_range=[0, 34]), tmp_path / "out")
    written = pd.read_csv(tmp_path / "out" / "manifest.csv", dtype=str, keep_default_na=False)
    assert list(written.columns[-2:]) == ["score", "visit"] and "loes" in written.columns
    assert written["score"].astype(float).tolist() == [0.0, 2.5, 7.0, 31.0]
    assert written["visit"].tolist() == ["1", "02", "1", ""]  # text: leading zeros and blanks stay
    images = pd.read_csv(tmp_path / "out" / "images.csv", dtype={"image_id": str})
    assert list(images.columns) == [*IMAGE_TABLE_COLUMNS, "score"]
    assert images["score"].tolist() == [0.0, 2.5, 7.0, 31.0]
    scores = json.loads((tmp_path / "out" / "data_summary.json").read_text())["scores"]
    values = np.array([0.0, 2.5, 7.0, 31.0])
    assert scores == {
        "column": "loes", "n": 4, "min": 0.0, "median": float(np.median(values)),
        "mean": float(values.mean()), "max": 31.0, "n_excluded": 0, "excluded": [],
    }


def test_without_a_visit_column_every_visit_is_empty(tmp_path):
    run_data(scored_settings(scored_source(tmp_path / "user", ["1", "2"])), tmp_path / "out")
    written = pd.read_csv(tmp_path / "out" / "manifest.csv", dtype=str, keep_default_na=False)
    assert written["visit"].tolist() == ["", ""]


def test_exclude_mode_drops_bad_score_rows_counts_and_lists_them_on_stderr(tmp_path, capsys):
    manifest = scored_source(tmp_path / "user", ["3", "N/A", "40", "", "5", "abc"])
    run_data(scored_settings(manifest, score_range=[0, 34], invalid_scores="exclude"), tmp_path / "out")
    written = read_manifest(tmp_path / "out" / "manifest.csv")
    assert written["image_id"].tolist() == ["p0", "p4"]
    assert written["score"].astype(float).tolist() == [3.0, 5.0]
    summary = json.loads((tmp_path / "out" / "data_summary.json").read_text())
    assert summary["n_images"] == 2 and summary["scores"]["n"] == 2 and summary["scores"]["n_excluded"] == 4
    excluded = summary["scores"]["excluded"]
    rows = [(3, "p1"), (4, "p2"), (5, "p3"), (7, "p5")]
    assert [(item["row"], item["image_id"]) for item in excluded] == rows
    assert "'N/A'" in excluded[0]["reason"] and "outside data.score_range [0, 34]" in excluded[1]["reason"]
    assert "empty cell" in excluded[2]["reason"] and "'abc'" in excluded[3]["reason"]
    stderr = capsys.readouterr().err.splitlines()
    assert "left out 4 row(s)" in stderr[0] and str(manifest) in stderr[0]
    assert [line.split(":")[0] for line in stderr[1:]] == [f"  row {r} (image id '{i}')" for r, i in rows]


def test_excluding_every_row_is_an_error(tmp_path):
    manifest = scored_source(tmp_path / "user", ["", "x"])
    with pytest.raises(LesionflowError, match=r"^data\.invalid_scores: every row of manifest .* 'loes'"):
        run_data(scored_settings(manifest, invalid_scores="exclude"), tmp_path / "out")
    assert not (tmp_path / "out" / "manifest.csv").exists()


def test_error_mode_stops_the_data_stage_with_every_bad_score_before_writing(tmp_path):
    manifest = scored_source(tmp_path / "user", ["3", "N/A", "40", "5"])
    with pytest.raises(ManifestProblems) as caught:
        run_data(scored_settings(manifest, score_range=[0, 34]), tmp_path / "out")
    assert [problem.row for problem in caught.value.problems] == [3, 4]
    assert not (tmp_path / "out").exists()


def test_score_settings_are_required_naming_the_missing_keys(small, tmp_path):
    with pytest.raises(LesionflowError, match=r"missing data\.score_column, data\.score_range, data\.inv"):
        run_data({"source": "manifest", "manifest": str(small)}, tmp_path / "out")


def test_without_a_score_column_no_output_gains_a_score(small, tmp_path):
    run_data(data_settings(source="manifest", manifest=str(small)), tmp_path / "out")
    assert "score" not in pd.read_csv(tmp_path / "out" / "manifest.csv").columns
    assert list(pd.read_csv(tmp_path / "out" / "images.csv").columns) == IMAGE_TABLE_COLUMNS
    assert "scores" not in json.loads((tmp_path / "out" / "data_summary.json").read_text())


def scored_generator(out: Path, **parameters) -> Path:
    """The fundus generator with a score and a visit column, as a generator with scores writes them."""
    path = synthetic.generate_dataset(out, **parameters)
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    table["loes_score"] = [f"{i * 0.5:g}" for i in range(len(table))]
    table["visit"] = table.groupby("subject").cumcount().add(1).astype(str)
    table.to_csv(path, index=False)
    return path


def test_synthetic_scores_are_parsed_and_the_manifest_keeps_its_relative_paths(tmp_path, monkeypatch):
    monkeypatch.setitem(GENERATORS, "scored", scored_generator)
    synthetic_section = {"kind": "scored", **synthetic_settings(n_images=12, image_size=32)}
    settings = data_settings(source="synthetic", synthetic=synthetic_section, score_column="loes_score")
    run_data(settings, tmp_path / "out")
    written = pd.read_csv(tmp_path / "out" / "manifest.csv", dtype=str, keep_default_na=False)
    assert not written["image"].str.startswith("/").any()
    assert written["score"].astype(float).tolist() == [i * 0.5 for i in range(12)]
    assert set(written["visit"]) <= {"1", "2", "3"}
    summary = json.loads((tmp_path / "out" / "data_summary.json").read_text())
    assert summary["scores"]["n"] == 12 and summary["scores"]["max"] == 5.5
    assert read_manifest(tmp_path / "out" / "manifest.csv")["image"].map(lambda p: Path(p).is_file()).all()
