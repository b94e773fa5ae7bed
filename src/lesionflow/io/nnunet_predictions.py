"""Write a lesionflow probability map as nnUNetv2_predict writes a case: a label map and an .npz.

For round trips through lesionflow.io.prediction_folder and for users who want nnU-Net-style
files. It must never write a pickle (nnU-Net's ``.pkl`` properties are not needed to read the
files back) nor a file that is not written atomically.
"""

from __future__ import annotations

import os
from pathlib import Path

import nibabel as nib
import numpy as np
from PIL import Image

from lesionflow.io.geometry import Geometry
from lesionflow.io.nifti import write_nifti
from lesionflow.io.prediction_folder import PROBABILITIES_KEY
from lesionflow.pipeline.artifacts import atomic_path, save_arrays
from lesionflow.pipeline.errors import LesionflowError

# An array laid out as lesionflow reads a volume (RAS) has this orientation in nibabel's terms.
_RAS = np.array([[0, 1.0], [1, 1.0], [2, 1.0]])


def write_nnunet_prediction(
    folder: str | os.PathLike,
    case: str,
    probability: np.ndarray,
    threshold: float,
    spatial_dims: int,
    affine: np.ndarray | None = None,
) -> tuple[Path, Path]:
    """Write ``{case}.png`` (2D) or ``{case}.nii.gz`` (3D) and ``{case}.npz``; return their paths.

    ``probability`` is the lesion's map in [0, 1] laid out as lesionflow reads the image: ``(H, W)``
    for a picture, ``(X, Y, Z)`` in RAS orientation for a volume. The label map is 1 where
    ``probability >= threshold`` (lesionflow's cut), uint8 as nnU-Net writes it; the npz holds
    float32 ``probabilities`` of background ``1 - p`` and lesion ``p``: ``(2, 1, H, W)`` for a
    picture, ``(2, Z, Y, X)`` for a volume, whose voxels are put back in the order ``affine``
    stores them (the source's own affine, or the identity when None) and then reversed to
    SimpleITK's order. A picture has no affine: ``affine`` must then be None.
    """
    values = _checked(probability, case, spatial_dims)
    if spatial_dims == 2 and affine is not None:
        raise LesionflowError(f"case {case}: a 2D picture has no affine; pass affine=None")
    folder = Path(folder)
    npz = folder / f"{case}.npz"
    if spatial_dims == 2:
        label_map = folder / f"{case}.png"
        with atomic_path(label_map) as tmp:
            # Labels 0 and 1 as stored values, as nnU-Net's NaturalImage2DIO writes them (not 0/255).
            Image.fromarray((values >= threshold).astype(np.uint8)).save(tmp, format="PNG")
        save_arrays(npz, {PROBABILITIES_KEY: _classes(values)[:, None]})
        return label_map, npz
    matrix = np.eye(4) if affine is None else np.asarray(affine, dtype=np.float64)
    if matrix.shape != (4, 4):
        raise LesionflowError(f"case {case}: affine of shape {matrix.shape}; expected 4 x 4")
    to_stored = nib.orientations.ornt_transform(_RAS, nib.orientations.io_orientation(matrix))
    stored = nib.orientations.apply_orientation(values, to_stored)
    label_map = folder / f"{case}.nii.gz"
    spacing = tuple(float(size) for size in nib.affines.voxel_sizes(matrix))
    write_nifti(label_map, (stored >= threshold).astype(np.uint8), Geometry(stored.shape, spacing, matrix))
    save_arrays(npz, {PROBABILITIES_KEY: _classes(stored).transpose(0, 3, 2, 1)})
    return label_map, npz


def _checked(probability: np.ndarray, case: str, spatial_dims: int) -> np.ndarray:
    """``probability`` as float32, or a LesionflowError naming the case and what is wrong."""
    values = np.asarray(probability, dtype=np.float32)
    if spatial_dims not in (2, 3) or values.ndim != spatial_dims:
        raise LesionflowError(
            f"case {case}: probability map of shape {values.shape} with spatial_dims {spatial_dims}; "
            "expected a 2D (H, W) or 3D (X, Y, Z) map"
        )
    if not np.isfinite(values).all() or values.min() < 0 or values.max() > 1:
        raise LesionflowError(f"case {case}: probabilities must be finite and in [0, 1]")
    return values


def _classes(values: np.ndarray) -> np.ndarray:
    """nnU-Net's class probabilities of a lesion map: background ``1 - p`` first, float32."""
    return np.stack([1 - values, values]).astype(np.float32)
