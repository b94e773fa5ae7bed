"""Tests of the export stage: predictions written in their source's format and geometry.

The round trip goes through the stages' own functions: a volume stored obliquely, in scanner
orientation and with anisotropic voxels, is checked, preprocessed (cropped), predicted, mapped
back and exported; the exported mask must lie where the source's lesion lies in the world.
"""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from schema_settings import top_level_section

from lesionflow.data.dataset import run_data
from lesionflow.data.preprocess import run_preprocess
from lesionflow.evaluation.export import run_export
from lesionflow.model import infer
from lesionflow.model.infer import run_infer
from lesionflow.pipeline.config import complete_run_section
from lesionflow.pipeline.errors import LesionflowError

# Head voxels are 100, lesion voxels 1000; the oracle model's logit is 0 half-way between.
HEAD, LESION = 100.0, 1000.0
LESION_VOXELS = [(5, 3, 9), (6, 3, 9), (6, 4, 9), (6, 4, 10)]


def oblique_scanner_affine() -> np.ndarray:
    """Voxel axes (posterior, inferior, left-ish), 0.9 x 3.0 x 1.2 mm, tilted 10 degrees."""
    angle = np.deg2rad(10)
    tilt = np.array(
        [[np.cos(angle), 0, np.sin(angle)], [0, 1, 0], [-np.sin(angle), 0, np.cos(angle)]]
    )
    axes = np.array([[0, 0, -1.0], [-1.0, 0, 0], [0, -1.0, 0]])
    affine = np.eye(4)
    affine[:3, :3] = tilt @ axes @ np.diag([0.9, 3.0, 1.2])
    affine[:3, 3] = [40.0, 12.0, -30.0]
    return affine


def world_points(affine: np.ndarray, voxels) -> set[tuple[float, ...]]:
    points = nib.affines.apply_affine(affine, np.asarray(voxels, dtype=float))
    return {tuple(np.round(p, 4)) for p in points}


def write_volume_dataset(folder):
    """Two subjects' volumes: a head (an ellipsoid in air) and, in the first, a small lesion."""
    shape = (12, 8, 16)
    grid = np.indices(shape).astype(float)
    centre = (np.array(shape) - 1) / 2
    radii = np.array(shape)[:, None, None, None] / 2.6
    inside = (((grid - centre[:, None, None, None]) / radii) ** 2).sum(0) <= 1
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for index, name in enumerate(("a", "b")):
        image = np.where(inside, HEAD, 0.0).astype(np.float32)
        mask = np.zeros(shape, dtype=np.uint8)
        if index == 0:
            for voxel in LESION_VOXELS:
                image[voxel], mask[voxel] = LESION, 1
        image_file = nib.Nifti1Image(image, oblique_scanner_affine())
        image_file.header["descrip"] = b"FLAIR"
        nib.save(image_file, folder / f"{name}.nii.gz")
        nib.save(nib.Nifti1Image(mask, oblique_scanner_affine()), folder / f"{name}_mask.nii.gz")
        rows.append(
            {"image_id": name, "image": f"{name}.nii.gz", "mask": f"{name}_mask.nii.gz", "subject": name}
        )
    pd.DataFrame(rows).to_csv(folder / "manifest.csv", index=False)
    return folder / "manifest.csv"


class Oracle(torch.nn.Module):
    """A model that finds the lesion by its brightness: logit 0 half-way between head and lesion."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - (HEAD + LESION) / 2) / 10


LOCKED = {
    "threshold": 0.5, "min_lesion_area": 0, "presence_threshold": 0.0,
    "presence_score": "max_probability", "connectivity": 3, "chosen_on": "validation",
}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    manifest = write_volume_dataset(root / "source")
    run_data(top_level_section("data", source="manifest", manifest=str(manifest)), root / "data")
    pd.DataFrame(
        {"image_id": ["a", "b"], "subject": ["a", "b"], "split": ["test", "val"]}
    ).to_csv(root / "split.csv", index=False)
    preprocess = complete_run_section("preprocess", {"crop_field_of_view": True})
    run_preprocess(root / "data" / "manifest.csv", root / "split.csv", preprocess, root / "pre")
    checkpoint = {"in_channels": 1, "spatial_dims": 3, "roi_size": None}
    settings = {"infer": complete_run_section("infer", {"device": "cpu"})}
    monkeypatch = pytest.MonkeyPatch()
    monkeypatch.setattr(infer, "load_model", lambda path, device: (Oracle().eval(), checkpoint))
    for subset in ("val", "test"):
        run_infer(root / "pre" / "images.csv", root / "pre" / "preprocess.json", root / "model.pt",
                  settings, subset, root / "infer")
    monkeypatch.undo()
    (root / "locked.json").write_text(json.dumps(LOCKED))
    record = run_export(
        root / "data" / "manifest.csv",
        {"val": root / "infer" / "val.npz", "test": root / "infer" / "test.npz"},
        root / "locked.json", root / "export",
    )
    return root, record


def test_the_preprocess_stage_cropped_the_volume_so_the_round_trip_maps_back(exported):
    root, _ = exported
    images = pd.read_csv(root / "pre" / "images.csv", dtype={"image_id": str})
    row = images.set_index("image_id").loc["a"]
    assert row["crop_start"] != "[0, 0, 0]" and row["shape"] != row["original_shape"]


def test_an_exported_mask_has_its_source_geometry_and_the_lesion_on_the_same_world_points(exported):
    root, record = exported
    source = nib.load(root / "source" / "a.nii.gz")
    written = nib.load(root / "export" / "test" / "masks" / "a.nii.gz")
    assert written.shape == source.shape
    np.testing.assert_allclose(written.affine, source.affine, atol=1e-6)
    assert nib.aff2axcodes(written.affine) == nib.aff2axcodes(source.affine) != ("R", "A", "S")
    np.testing.assert_array_equal(written.header["pixdim"][1:4], source.header["pixdim"][1:4])
    assert written.header["qform_code"] == source.header["qform_code"]
    predicted = np.argwhere(np.asarray(written.dataobj) == 1)
    assert world_points(written.affine, predicted) == world_points(source.affine, LESION_VOXELS)
    assert record["counts"] == {"val": 1, "test": 1}


def test_an_exported_probability_map_is_float_and_high_only_on_the_lesion(exported):
    root, _ = exported
    prob = nib.load(root / "export" / "test" / "probabilities" / "a.nii.gz")
    values = prob.get_fdata()
    assert prob.get_data_dtype() == np.float32
    assert values[tuple(np.array(LESION_VOXELS).T)].min() > 0.99
    assert np.count_nonzero(values > 0.5) == len(LESION_VOXELS)


def test_a_lesion_free_volume_exports_an_empty_mask(exported):
    root, _ = exported
    assert not np.asarray(nib.load(root / "export" / "val" / "masks" / "b.nii.gz").dataobj).any()


def test_pictures_are_exported_as_png_of_their_size(tmp_path):
    probs = {"p": np.linspace(0, 1, 12, dtype=np.float16).reshape(3, 4)}
    np.savez(tmp_path / "test.npz", **probs)
    np.savez(tmp_path / "val.npz")
    Image.fromarray(np.zeros((3, 4, 3), dtype=np.uint8)).save(tmp_path / "p.jpg")
    Image.fromarray(np.zeros((3, 4), dtype=np.uint8)).save(tmp_path / "p_mask.png")
    pd.DataFrame([{"image": "p.jpg", "mask": "p_mask.png", "subject": "1"}]).to_csv(
        tmp_path / "manifest.csv", index=False
    )
    (tmp_path / "locked.json").write_text(json.dumps(LOCKED))
    run_export(
        tmp_path / "manifest.csv", {"val": tmp_path / "val.npz", "test": tmp_path / "test.npz"},
        tmp_path / "locked.json", tmp_path / "out",
    )
    mask = np.asarray(Image.open(tmp_path / "out" / "test" / "masks" / "p.png"))
    grey = np.asarray(Image.open(tmp_path / "out" / "test" / "probabilities" / "p.png"))
    np.testing.assert_array_equal(mask, np.where(probs["p"] >= 0.5, 255, 0))
    np.testing.assert_array_equal(grey, np.rint(probs["p"].astype(np.float32) * 255))


def test_a_map_of_an_image_not_in_the_manifest_is_refused_naming_the_file(tmp_path):
    np.savez(tmp_path / "test.npz", ghost=np.zeros((2, 2), dtype=np.float16))
    Image.fromarray(np.zeros((2, 2), dtype=np.uint8)).save(tmp_path / "a.png")
    pd.DataFrame([{"image": "a.png", "mask": "a.png", "subject": "1"}]).to_csv(
        tmp_path / "manifest.csv", index=False
    )
    (tmp_path / "locked.json").write_text(json.dumps(LOCKED))
    with pytest.raises(LesionflowError, match=r"test\.npz: image id 'ghost' is not in the manifest"):
        run_export(
            tmp_path / "manifest.csv", {"val": tmp_path / "test.npz", "test": tmp_path / "test.npz"},
            tmp_path / "locked.json", tmp_path / "out",
        )
