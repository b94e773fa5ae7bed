"""Where an array's pixels or voxels sit: spatial shape, spacing and, for volumes, the affine.

Never reads or writes a file: the readers fill it in, and the writers put it back.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np


@dataclass(frozen=True)
class Geometry:
    """The spatial layout of one image.

    ``shape`` is the spatial shape (no channel axis). ``spacing`` is the size of a pixel or voxel
    along each axis: millimetres from a NIfTI header, 1.0 for pictures (PNG, JPEG, ...) and
    ``.npy`` arrays, whose files carry no physical size. ``affine`` is the 4 x 4 voxel-to-world
    matrix of a volume, or None for pictures and arrays: they have no world coordinates, and
    None says so rather than an identity that would look like a measured one.
    """

    shape: tuple[int, ...]
    spacing: tuple[float, ...]
    # Arrays do not compare with ==; two geometries are equal by shape and spacing.
    affine: np.ndarray | None = field(default=None, compare=False)

    @property
    def spatial_dims(self) -> int:
        """2 for a picture, 3 for a volume."""
        return len(self.shape)


def pixel_geometry(shape: tuple[int, ...]) -> Geometry:
    """The geometry of a picture or array of spatial ``shape``: unit spacing, no affine."""
    return Geometry(tuple(int(size) for size in shape), (1.0,) * len(shape), None)


class Loaded(NamedTuple):
    """What a reader returns: the array and its geometry (``array, geometry = read_image(p)``)."""

    array: np.ndarray
    geometry: Geometry
