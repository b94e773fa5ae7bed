"""A bad user manifest stops the pipeline in the data job, with every problem named by its row."""

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from .pipeline import planned_jobs, snakemake, tiny_config, tiny_run, write_config

pytestmark = pytest.mark.slow

# Row (header = row 1) -> the column and file the problem line must name.
PROBLEM_ROWS = {
    3: ("image", "images/garbage.png"),
    4: ("mask", "masks/small.png"),
    5: ("image", "images/a.png"),
    6: ("subject", "images/s.png"),
    7: ("image", "images/flat.png"),
    8: ("mask", "masks/gone.png"),
    9: ("image", "images/gone.png"),
    10: ("mask", "masks/shifted.nii.gz"),
}


def _picture(path: Path, array: np.ndarray) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return f"{path.parent.name}/{path.name}"


def _volume(path: Path, array: np.ndarray, offset: float = 0.0) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    affine = np.diag([0.9, 0.9, 2.0, 1.0])
    affine[2, 3] = offset
    nib.save(nib.Nifti1Image(array, affine), path)
    return f"{path.parent.name}/{path.name}"


def _bad_manifest(folder: Path) -> Path:
    """A clean row 2, then a garbage file, a small mask, a duplicate id, no subject, a flat image,
    two missing files and a volume whose mask lies 4 mm off its grid."""
    ramp = np.zeros((32, 32, 3), dtype=np.uint8)
    ramp[..., 1] = np.arange(32, dtype=np.uint8) * 8
    mask = np.zeros((32, 32), dtype=np.uint8)
    mask[4:9, 4:9] = 255
    image_a = _picture(folder / "images" / "a.png", ramp)
    mask_ok = _picture(folder / "masks" / "a.png", mask)
    (folder / "images" / "garbage.png").write_bytes(b"garbage, not a picture")
    small = _picture(folder / "masks" / "small.png", mask[:16, :16])
    image_b = _picture(folder / "images" / "b.png", ramp)
    image_s = _picture(folder / "images" / "s.png", ramp)
    image_c = _picture(folder / "images" / "c.png", ramp)
    flat = _picture(folder / "images" / "flat.png", np.full((32, 32, 3), 7, dtype=np.uint8))
    head = np.zeros((12, 10, 6), dtype=np.float32)
    head[2:10, 2:8, 1:5] = 300.0
    volume = _volume(folder / "images" / "v.nii.gz", head)
    shifted = _volume(folder / "masks" / "shifted.nii.gz", (head > 0).astype(np.uint8), offset=4.0)
    rows = [
        f"{image_a},{mask_ok},s2",
        f"images/garbage.png,{mask_ok},s3",
        f"{image_b},{small},s4",
        f"{image_a},{mask_ok},s5",
        f"{image_s},{mask_ok},",
        f"{flat},{mask_ok},s7",
        f"{image_c},masks/gone.png,s8",  # missing files: planned, then listed with the others
        f"images/gone.png,{mask_ok},s9",
        f"{volume},{shifted},s10",
    ]
    path = folder / "manifest.csv"
    path.write_text("\n".join(["image,mask,subject", *rows]) + "\n")
    return path


def test_bad_manifest_stops_the_data_job_with_every_problem_and_nothing_downstream_runs(tmp_path):
    manifest = _bad_manifest(tmp_path / "user")
    config = tiny_config({"a": tiny_run()})
    config["data"] = {"source": "manifest", "manifest": str(manifest)}
    write_config(tmp_path, config)
    planned, _ = planned_jobs(tmp_path)
    assert planned["data"] == 1 and planned["split"] == 1 and planned["train"] == 1

    result = snakemake(tmp_path, check=False)

    assert result.returncode != 0
    (log,) = (tmp_path / "logs" / "data").glob("*.log")
    lines = log.read_text().splitlines()
    assert f"lesionflow: error: manifest {manifest}: 8 problems in 8 rows" in lines
    for row, (column, file) in PROBLEM_ROWS.items():
        named = [line for line in lines if f"manifest {manifest}, row {row}, " in line]
        assert len(named) == 1, named
        assert f"column '{column}', file {manifest.parent / file}:" in named[0]
    assert not (tmp_path / "results" / "split").exists()
    assert not (tmp_path / "results" / "train").exists()
    assert not list((tmp_path / "results" / "data").glob("*/manifest.csv"))
