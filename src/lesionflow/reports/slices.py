"""2D panels of pictures and volumes for figures: orthogonal planes through a chosen voxel, the worst slice.

Pure array functions, one code path for pictures and volumes; must never change a value it shows
(cutting only indexes, transposes and flips) nor read a file.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from lesionflow.pipeline.errors import LesionflowError

# Volumes are RAS: axis 0 runs left -> right, 1 posterior -> anterior, 2 inferior -> superior.
VOLUME_DIMS = 3
AXIAL_AXIS = 2
# The panels of an array with this many spatial axes: (name, fixed axis). A picture is stored as
# it is shown, so it is its own single panel; a volume is cut once across each RAS axis.
PLANES: dict[int, tuple[tuple[str, int | None], ...]] = {
    2: (("", None),),
    VOLUME_DIMS: (("axial", AXIAL_AXIS), ("coronal", 1), ("sagittal", 0)),
}
# Names of the voxel coordinates, for panel labels such as 'axial z=12'.
_AXIS_NAMES = "xyz"


@dataclass(frozen=True)
class Panel:
    """One 2D view of a ``(*spatial)`` array, or of a ``(C, *spatial)`` image channel by channel.

    ``axis`` is the spatial axis held at ``position`` (None for a picture, shown whole). ``aspect``
    is the height over the width of one panel pixel in millimetres: pass it to imshow so that
    anisotropic voxels are not squashed.
    """

    name: str
    ndim: int
    axis: int | None
    position: int | None
    aspect: float

    @property
    def label(self) -> str:
        """'axial z=12' for a plane of a volume; '' for a picture."""
        if self.axis is None:
            return ""
        return f"{self.name} {_AXIS_NAMES[self.axis]}={self.position}"


def _checked_dims(shape: Sequence[int], what: str) -> int:
    if len(shape) not in PLANES:
        raise LesionflowError(
            f"{what}: expected a 2D picture or a 3D volume, got spatial shape {tuple(shape)}"
        )
    return len(shape)


def _panel(name: str, axis: int | None, position: int | None, spacing: Sequence[float]) -> Panel:
    kept = [a for a in range(len(spacing)) if a != axis]
    # A volume is shown the radiological way: the higher RAS axis runs up the panel, the lower
    # one runs right to left (see :func:`cut`); a picture keeps its rows and columns.
    rows, cols = kept if axis is None else kept[::-1]
    return Panel(name, len(spacing), axis, position, float(spacing[rows]) / float(spacing[cols]))


def planes(shape: Sequence[int], spacing: Sequence[float], voxel: Sequence[int]) -> list[Panel]:
    """The panels that show an array of spatial ``shape`` through ``voxel``.

    A volume gives its axial, coronal and sagittal planes through ``voxel`` (see :func:`cut` for
    their orientation); a picture gives one panel, itself. ``spacing`` is the size of a voxel
    along each axis (mm), which sets each panel's aspect.
    """
    ndim = _checked_dims(shape, "planes")
    if len(spacing) != ndim or len(voxel) != ndim:
        raise LesionflowError(
            f"planes: spacing {tuple(spacing)} and voxel {tuple(voxel)} must have one value per "
            f"axis of shape {tuple(shape)}"
        )
    return [
        _panel(name, axis, None if axis is None else int(voxel[axis]), spacing) for name, axis in PLANES[ndim]
    ]


def cut(array: np.ndarray, panel: Panel) -> np.ndarray:
    """What ``panel`` shows of ``array`` (``(*spatial)`` or ``(C, *spatial)``): ``(..., rows, columns)``.

    Planes of an RAS volume follow the radiological convention: the patient's right is on the
    left of the panel in axial and coronal planes, anterior is on the left in sagittal planes,
    superior is up in coronal and sagittal planes and anterior is up in axial planes. A picture
    is returned as it is.
    """
    if panel.axis is None:
        return array
    index: list[slice | int] = [slice(None)] * panel.ndim
    index[panel.axis] = panel.position
    plane = array[(Ellipsis, *index)]
    # (..., lower axis, higher axis) -> rows from the higher axis' far end, columns from the
    # lower axis' far end: superior (or anterior) up, patient's right (or anterior) on the left.
    return np.swapaxes(plane, -1, -2)[..., ::-1, ::-1]


def focus_voxel(reference: np.ndarray, prob: np.ndarray) -> tuple[int, ...]:
    """The voxel to show a case through: the centroid of its largest reference lesion, else the
    highest-probability voxel, else the centre.

    Lesions are connected components (scipy.ndimage.label's default, face connectivity, as in
    the data stage); of equal sizes the first in scan order wins. The centroid is rounded to the
    nearest voxel. The centre is used where the map is constant (no voxel stands out).
    """
    _checked_dims(reference.shape, "focus voxel")
    if prob.shape != reference.shape:
        raise LesionflowError(
            f"focus voxel: the probability map's shape {prob.shape} differs from the reference's "
            f"{reference.shape}"
        )
    labels, count = ndimage.label(reference)
    if count:
        largest = int(np.bincount(labels.ravel())[1:].argmax()) + 1
        centroid = ndimage.center_of_mass(labels == largest)
        return tuple(int(round(value)) for value in centroid)
    if prob.max() > prob.min():
        return tuple(int(value) for value in np.unravel_index(int(np.argmax(prob)), prob.shape))
    return tuple(size // 2 for size in reference.shape)


def worst_axial_slice(reference: np.ndarray, pred: np.ndarray) -> int:
    """The axial slice (index along axis 2) with the most false-positive plus false-negative
    voxels between ``pred`` and ``reference``; ties go to the lowest index."""
    if reference.ndim != VOLUME_DIMS or reference.shape != pred.shape:
        raise LesionflowError(
            f"worst axial slice: expected a reference and a prediction of one 3D shape, got "
            f"{reference.shape} and {pred.shape}"
        )
    others = tuple(a for a in range(reference.ndim) if a != AXIAL_AXIS)
    wrong = np.count_nonzero(reference.astype(bool) != pred.astype(bool), axis=others)
    return int(np.argmax(wrong))


def worst_panels(reference: np.ndarray, pred: np.ndarray, spacing: Sequence[float]) -> list[Panel]:
    """The worst axial slice of a volume (see :func:`worst_axial_slice`) as a panel; none for a
    picture, which is shown whole already."""
    ndim = _checked_dims(reference.shape, "worst slice")
    return [
        _panel(name, axis, worst_axial_slice(reference, pred), spacing)
        for name, axis in PLANES[ndim]
        if axis == AXIAL_AXIS
    ]
