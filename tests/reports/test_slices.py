"""Tests of lesionflow.reports.slices: the voxel a volume is shown through, its three planes in
radiological orientation with the aspect of their voxels, the worst axial slice, and pictures
passed through as their own single panel."""

import numpy as np
import pytest
from scipy import ndimage

from lesionflow.pipeline.errors import LesionflowError
from lesionflow.reports import slices

# A tiny RAS volume: 12 voxels left -> right, 14 posterior -> anterior, 8 inferior -> superior.
SHAPE = (12, 14, 8)


def two_lesions() -> np.ndarray:
    reference = np.zeros(SHAPE, dtype=bool)
    reference[1, 1, 1] = True  # a one-voxel lesion
    reference[3:6, 4:9, 2:5] = True  # the largest: centroid (4, 6, 3)
    reference[3, 4, 1] = True  # an odd voxel, so the centroid is not the box centre alone
    return reference


def test_focus_voxel_is_the_centroid_of_the_largest_lesion():
    reference = two_lesions()
    labels, _ = ndimage.label(reference)
    expected = np.rint(ndimage.center_of_mass(labels == labels[4, 6, 3])).astype(int)
    voxel = slices.focus_voxel(reference, np.zeros(SHAPE, dtype=np.float32))
    assert voxel == tuple(expected) == (4, 6, 3)


def test_focus_voxel_without_a_lesion_is_the_most_probable_voxel_else_the_centre():
    empty = np.zeros(SHAPE, dtype=bool)
    prob = np.full(SHAPE, 0.1, dtype=np.float32)
    assert slices.focus_voxel(empty, prob) == (6, 7, 4)  # a constant map: the centre
    prob[9, 2, 6] = 0.8
    assert slices.focus_voxel(empty, prob) == (9, 2, 6)


def test_planes_are_radiological_with_superior_and_anterior_at_the_top():
    # A marker at the patient's left (x=2), most anterior (y=13), most superior (z=7).
    volume = np.zeros(SHAPE, dtype=np.float32)
    volume[2, 13, 7] = 1
    axial, coronal, sagittal = slices.planes(SHAPE, (1.0, 1.0, 1.0), (2, 13, 7))
    assert [p.name for p in (axial, coronal, sagittal)] == ["axial", "coronal", "sagittal"]
    assert [p.label for p in (axial, coronal, sagittal)] == ["axial z=7", "coronal y=13", "sagittal x=2"]
    shown = {p.name: slices.cut(volume, p) for p in (axial, coronal, sagittal)}
    assert shown["axial"].shape == (14, 12) and shown["coronal"].shape == (8, 12)
    assert shown["sagittal"].shape == (8, 14)
    # Top row: anterior (axial) or superior (coronal, sagittal). The patient's left is on the
    # right of the panel (radiological); anterior is on the left of a sagittal panel.
    assert np.argwhere(shown["axial"]).tolist() == [[0, 12 - 1 - 2]]
    assert np.argwhere(shown["coronal"]).tolist() == [[0, 12 - 1 - 2]]
    assert np.argwhere(shown["sagittal"]).tolist() == [[0, 0]]


def test_cut_of_an_image_cuts_every_channel_alike():
    rng = np.random.default_rng(0)
    image = rng.random((2, *SHAPE), dtype=np.float32)
    for panel in slices.planes(SHAPE, (1.0, 1.0, 1.0), (5, 6, 3)):
        assert np.array_equal(slices.cut(image, panel)[1], slices.cut(image[1], panel))


def test_aspect_follows_the_spacing_so_thick_slices_are_not_squashed():
    axial, coronal, sagittal = slices.planes(SHAPE, (0.5, 1.0, 3.0), (0, 0, 0))
    # Height over width of one panel pixel, in mm: rows are the higher RAS axis of the panel.
    assert axial.aspect == pytest.approx(1.0 / 0.5)
    assert coronal.aspect == pytest.approx(3.0 / 0.5)
    assert sagittal.aspect == pytest.approx(3.0 / 1.0)


def test_worst_axial_slice_is_the_one_with_most_false_positives_and_negatives():
    reference = two_lesions()
    pred = reference.copy()
    pred[3:5, 4, 3] = False  # 2 false negatives in slice 3
    pred[8:10, 10:12, 6] = True  # 4 false positives in slice 6
    pred[0, 0, 2] = True  # 1 false positive in slice 2
    assert slices.worst_axial_slice(reference, pred) == 6
    (panel,) = slices.worst_panels(reference, pred, (1.0, 1.0, 2.0))
    assert panel.label == "axial z=6" and panel.aspect == 1.0
    assert np.count_nonzero(slices.cut(reference, panel) != slices.cut(pred, panel)) == 4
    pred[8:10, 10:12, 6] = False
    pred[5, 4:6, 3] = False  # now 4 errors in slice 3 ...
    pred[1:5, 12, 5] = True  # ... and 4 in slice 5: a tie goes to the lower slice
    assert slices.worst_axial_slice(reference, pred) == 3


def test_a_picture_is_its_own_single_panel_shown_as_stored():
    picture = np.random.default_rng(0).random((3, 40, 60), dtype=np.float32)
    (panel,) = slices.planes((40, 60), (1.0, 1.0), (10, 20))
    assert panel.label == "" and panel.aspect == 1.0
    assert slices.cut(picture, panel) is picture
    mask = np.zeros((40, 60), dtype=bool)
    assert slices.worst_panels(mask, ~mask, (1.0, 1.0)) == []


def test_arrays_that_are_neither_pictures_nor_volumes_are_refused():
    with pytest.raises(LesionflowError, match=r"planes: expected a 2D picture or a 3D volume"):
        slices.planes((4, 4, 4, 4), (1.0,) * 4, (0,) * 4)
    with pytest.raises(LesionflowError, match="one value per axis"):
        slices.planes(SHAPE, (1.0, 1.0), (0, 0, 0))
    with pytest.raises(LesionflowError, match="worst axial slice"):
        slices.worst_axial_slice(np.zeros(SHAPE, bool), np.zeros((12, 14, 7), bool))
