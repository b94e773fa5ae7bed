"""Tests of the built-in 3D dataset: NIfTI layout, orientation, lesion statistics, determinism."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from nibabel.affines import obliquity
from scipy import ndimage

from lesionflow.data import synthetic_brain
from lesionflow.data.synthetic_brain import generate_brain_dataset
from lesionflow.pipeline.errors import LesionflowError

N_IMAGES = 12
IMAGE_SIZE = 32
LESION_FREE_FRACTION = 0.25


def _generate(folder: Path, **changes) -> Path:
    settings = {
        "n_images": N_IMAGES,
        "image_size": IMAGE_SIZE,
        "lesion_free_fraction": LESION_FREE_FRACTION,
        "seed": 3,
        **changes,
    }
    return generate_brain_dataset(folder, **settings)


def _canonical(folder: Path, relative: str) -> nib.Nifti1Image:
    return nib.as_closest_canonical(nib.load(folder / relative))


def _voxels(volume: nib.Nifti1Image) -> np.ndarray:
    return np.asarray(volume.dataobj)


def _head_outline(image: np.ndarray) -> np.ndarray:
    """Each axial slice's head, holes filled: everything inside the bright scalp."""
    foreground = image > 0.25 * np.percentile(image, 99)
    return np.stack([ndimage.binary_fill_holes(foreground[..., k]) for k in range(image.shape[-1])], -1)


def _marker(image: np.ndarray) -> np.ndarray:
    """The fiducial capsule: the bright blob around the brightest voxel."""
    components, _ = ndimage.label(image > 0.5 * image.max())
    return components == components[np.unravel_index(np.argmax(image), image.shape)]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> tuple[Path, pd.DataFrame]:
    folder = tmp_path_factory.mktemp("brain")
    return folder, pd.read_csv(_generate(folder), dtype=str)


@pytest.fixture(scope="module")
def canonical(dataset) -> dict[str, tuple[np.ndarray, np.ndarray, nib.Nifti1Image]]:
    """Every volume upright in RAS: image id -> (image, bool mask, canonical image)."""
    folder, manifest = dataset
    volumes = {}
    for row in manifest.itertuples():
        image, mask = _canonical(folder, row.image), _canonical(folder, row.mask)
        volumes[row.image_id] = (_voxels(image).astype(float), _voxels(mask) == 1, image)
    return volumes


def test_manifest_lists_every_volume_with_relative_nifti_paths(dataset):
    folder, manifest = dataset
    assert list(manifest.columns) == ["image_id", "subject", "image", "mask"]
    assert len(manifest) == N_IMAGES and manifest["image_id"].is_unique
    assert (manifest["image_id"].str.split("_").str[0] == manifest["subject"]).all()
    assert manifest.groupby("subject").size().between(1, 2).all()
    for row in manifest.itertuples():
        assert row.image == f"images/{row.image_id}.nii.gz" and row.mask == f"masks/{row.image_id}.nii.gz"
        image, mask = nib.load(folder / row.image), nib.load(folder / row.mask)
        assert image.get_data_dtype() == np.int16 and mask.get_data_dtype() == np.uint8
        assert image.shape == mask.shape and len(image.shape) == 3
        assert set(np.unique(_voxels(mask))) <= {0, 1}
        np.testing.assert_array_equal(image.affine, mask.affine)


def test_lesions_lie_beneath_scalp_and_skull(canonical):
    for image, mask, _ in canonical.values():
        outline = _head_outline(image)
        # Millimetres to the outside of the head within each axial slice (1 mm in-plane voxels).
        slices = np.moveaxis(outline, -1, 0)
        depth = np.stack([ndimage.distance_transform_edt(np.pad(s, 1))[1:-1, 1:-1] for s in slices], -1)
        assert (depth[mask] >= 2).all()
        # Lesions are brain tissue, far brighter than the noisy background.
        assert (image[mask] > 5 * np.median(image[~outline])).all()


def test_lesions_lie_in_the_white_matter_of_the_drawn_anatomy():
    for seed in range(4):
        subject = synthetic_brain._subject(24 + 4 * seed, np.random.default_rng(seed))
        for lesion in subject.lesions:
            assert lesion.mask.sum() >= synthetic_brain.MIN_LESION_VOXELS
            assert (subject.labels[lesion.box][lesion.mask] == synthetic_brain.WHITE).all()


@pytest.mark.parametrize(("fraction", "free"), [(0.0, 0), (0.25, 3), (0.5, 6), (1.0, 12)])
def test_exactly_the_requested_number_of_volumes_is_lesion_free(tmp_path, fraction, free):
    manifest = pd.read_csv(_generate(tmp_path, image_size=24, lesion_free_fraction=fraction))
    empty = [not _voxels(nib.load(tmp_path / relative)).any() for relative in manifest["mask"]]
    assert sum(empty) == free


def test_lesions_are_one_to_ten_components_of_varied_size(canonical):
    counts, sizes = [], []
    for _, mask, _ in canonical.values():
        components, count = ndimage.label(mask)
        if count:
            counts.append(count)
            sizes.extend(np.bincount(components.ravel())[1:])
    assert min(counts) >= 1 and max(counts) <= synthetic_brain.MAX_LESIONS_PER_SUBJECT
    assert min(sizes) >= synthetic_brain.MIN_LESION_VOXELS and max(sizes) >= 4 * min(sizes)


def test_lesions_are_brighter_than_the_white_matter_around_them(canonical):
    ratios = []
    for image, mask, _ in canonical.values():
        components, count = ndimage.label(mask)
        for lesion in (components == k for k in range(1, count + 1)):
            ring = ndimage.binary_dilation(lesion, iterations=2) & ~ndimage.binary_dilation(mask)
            ratios.append(image[lesion].mean() / image[ring].mean())
    assert ratios and min(ratios) > 1.0
    assert np.median(ratios) > 1.4


def test_voxels_are_anisotropic_with_fewer_thicker_slices(dataset):
    folder, manifest = dataset
    for relative in manifest["image"]:
        volume = nib.load(folder / relative)
        zooms = np.array(volume.header.get_zooms())
        thick = int(np.argmax(zooms))
        assert sorted(zooms)[:2] == pytest.approx([1.0, 1.0])
        assert 1.5 <= zooms[thick] <= 2.0
        assert volume.shape[thick] < IMAGE_SIZE == min(np.delete(volume.shape, thick))
        # The field of view is about as tall as it is wide.
        assert abs(volume.shape[thick] * zooms[thick] - IMAGE_SIZE) <= zooms[thick]


def test_volumes_are_stored_in_varied_orientations_with_slightly_oblique_affines(dataset):
    folder, manifest = dataset
    affines = [nib.load(folder / relative).affine for relative in manifest["image"]]
    assert len({nib.aff2axcodes(affine) for affine in affines}) >= 4
    tilts = np.array([np.degrees(obliquity(affine)).max() for affine in affines])
    assert (tilts > 0).all() and tilts.max() > 1 and tilts.max() < 10


def test_closest_canonical_brings_every_head_upright_in_ras(canonical):
    for image, _, volume in canonical.values():
        assert nib.aff2axcodes(volume.affine) == ("R", "A", "S")
        zooms = volume.header.get_zooms()
        assert zooms[2] > zooms[0] == zooms[1]  # axial slices along the S axis
        # The fiducial sits on the right forehead: right of, in front of and above the centre.
        marker = np.array(ndimage.center_of_mass(_marker(image))) / (np.array(image.shape) - 1)
        assert (marker > 0.6).all()
        # The neck leaves through the bottom of the field of view, the crown stays inside it.
        assert image[..., 0].mean() > 1.5 * image[..., -1].mean()
        # A head is longer front to back (A) than side to side (R).
        widest = _head_outline(image)[..., np.argmax(_head_outline(image).sum(axis=(0, 1)))]
        assert np.ptp(np.flatnonzero(widest.any(axis=0))) > np.ptp(np.flatnonzero(widest.any(axis=1)))


def test_sessions_of_a_subject_share_anatomy_and_keep_earlier_lesions(dataset, canonical):
    _, manifest = dataset
    pairs = [ids for ids in manifest.groupby("subject")["image_id"].apply(list) if len(ids) == 2]
    assert pairs
    for first, second in pairs:
        (image_1, mask_1, _), (image_2, mask_2, _) = canonical[first], canonical[second]
        assert image_1.shape == image_2.shape
        assert np.corrcoef(image_1.ravel(), image_2.ravel())[0, 1] > 0.9
        assert not (mask_1 & ~mask_2).any()


def test_same_seed_gives_identical_bytes_and_another_seed_differs(tmp_path):
    first = _generate(tmp_path / "a", n_images=3, image_size=24)
    second = _generate(tmp_path / "b", n_images=3, image_size=24)
    other = _generate(tmp_path / "c", n_images=3, image_size=24, seed=4)
    assert first.read_bytes() == second.read_bytes()
    manifest = pd.read_csv(first)
    for relative in [*manifest["image"], *manifest["mask"]]:
        assert (first.parent / relative).read_bytes() == (second.parent / relative).read_bytes()
    relative = manifest["image"].iloc[0]
    assert (first.parent / relative).read_bytes() != (other.parent / relative).read_bytes()


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("n_images", 0),
        ("n_images", True),
        ("image_size", 16),
        ("image_size", 300),
        ("image_size", 32.0),
        ("lesion_free_fraction", 1.5),
        ("seed", -1),
    ],
)
def test_invalid_parameter_error_names_the_setting(tmp_path, name, value):
    with pytest.raises(LesionflowError, match=rf"data\.synthetic\.{name}"):
        _generate(tmp_path, **{name: value})
    assert not (tmp_path / "manifest.csv").exists()
