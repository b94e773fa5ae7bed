"""Tests of lesionflow.model.sampling: lesion oversampling, plain shuffling and augmentations."""

import numpy as np
import pytest
import torch
from monai.transforms import (
    Compose,
    EnsureTyped,
    RandCropByPosNegLabeld,
    RandFlipd,
    RandRotate90d,
    RandScaleIntensityd,
    RandShiftIntensityd,
)

from lesionflow.model.sampling import LesionBatchSampler, training_transforms

EVERY_AUGMENTATION = {"flip": True, "rotate90": True, "intensity": True}


def test_oversampling_puts_the_requested_share_of_positives_in_every_batch():
    positive = [True] * 3 + [False] * 17
    sampler = LesionBatchSampler(positive, batch_size=4, positive_fraction=0.5, seed=0)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 5
    assert all(len(batch) == 4 and sum(positive[i] for i in batch) == 2 for batch in batches)


def test_zero_oversampling_is_plain_shuffling_of_every_image_once():
    positive = [True] * 3 + [False] * 8
    batches = list(LesionBatchSampler(positive, 4, 0.0, seed=0))
    assert [len(b) for b in batches] == [4, 4, 3]
    assert sorted(i for batch in batches for i in batch) == list(range(11))


def test_reseeding_the_sampler_repeats_its_batches():
    sampler = LesionBatchSampler([True] * 3 + [False] * 9, 4, 0.5, seed=0)
    sampler.reseed(7)
    first = list(sampler)
    list(sampler)  # another epoch moves the generator on
    sampler.reseed(7)
    assert list(sampler) == first


def test_patch_transforms_crop_image_and_label_alike_to_the_patch():
    transform = training_transforms(
        {"flip": True, "rotate90": True, "intensity": False}, [8, 8], [16, 16]
    )
    transform.set_random_state(seed=0)
    image = np.arange(3 * 16 * 16, dtype=np.float32).reshape(3, 16, 16)
    label = np.zeros((1, 16, 16), dtype=np.float32)
    label[0, 4:6, 4:6] = 1
    # The label is channel 0 of the image, so every spatial transform must move both alike.
    image[0] = label[0]
    (out,) = transform({"image": image, "label": label})
    assert out["image"].shape == (3, 8, 8) and out["label"].shape == (1, 8, 8)
    assert out["image"].dtype == torch.float32
    assert torch.equal(out["image"][0], out["label"][0])


def flip_axes(transform) -> list[int]:
    return [step.flipper.spatial_axis for step in transform.transforms if isinstance(step, RandFlipd)]


@pytest.mark.parametrize(
    "patch, shape, turns",
    [
        (None, [8, 10], []),
        ([6, 6], [8, 10], [(0, 1)]),
        (None, [8, 8, 6], [(0, 1)]),
        ([6, 8, 4], [8, 10, 6], []),
        ([6, 6, 4], [8, 10, 6], [(0, 1)]),
    ],
)
def test_flips_cover_every_spatial_axis_and_turns_only_the_first_two_when_square(patch, shape, turns):
    transform = training_transforms(EVERY_AUGMENTATION, patch, shape)
    assert flip_axes(transform) == list(range(len(shape)))
    rotations = [step for step in transform.transforms if isinstance(step, RandRotate90d)]
    assert [step.spatial_axes for step in rotations] == turns


def test_certain_3d_flips_mirror_image_and_label_over_all_three_axes():
    transform = training_transforms({"flip": True, "rotate90": False, "intensity": False}, None, [4, 5, 3])
    for step in transform.transforms:
        if isinstance(step, RandFlipd):
            step.prob = 1.0
    image = np.arange(2 * 4 * 5 * 3, dtype=np.float32).reshape(2, 4, 5, 3)
    label = (image[:1] % 7 == 0).astype(np.float32)
    out = transform({"image": image, "label": label})
    assert np.array_equal(out["image"].numpy(), np.flip(image, axis=(1, 2, 3)))
    assert np.array_equal(out["label"].numpy(), np.flip(label, axis=(1, 2, 3)))


def transforms_before_3d(patch_size) -> Compose:
    """training_transforms as it was before 3D, for a square 2D patch and every augmentation."""
    keys = ["image", "label"]
    return Compose([
        RandCropByPosNegLabeld(
            keys, label_key="label", spatial_size=list(patch_size), pos=1.0, neg=1.0, num_samples=1
        ),
        *[RandFlipd(keys, prob=0.5, spatial_axis=axis) for axis in (0, 1)],
        RandRotate90d(keys, prob=0.75, max_k=3, spatial_axes=(0, 1)),
        RandScaleIntensityd("image", factors=0.1, prob=0.5),
        RandShiftIntensityd("image", offsets=0.05, prob=0.5),
        EnsureTyped(keys, data_type="tensor", dtype=torch.float32, track_meta=False),
    ])


def test_2d_augmentations_and_their_random_draws_are_those_of_before():
    rng = np.random.default_rng(0)
    image = rng.random((3, 16, 16), dtype=np.float32)
    label = (rng.random((1, 16, 16)) > 0.9).astype(np.float32)
    ours, before = training_transforms(EVERY_AUGMENTATION, [8, 8], [16, 16]), transforms_before_3d([8, 8])
    ours.set_random_state(seed=3)
    before.set_random_state(seed=3)
    for _ in range(20):
        (a,), (b,) = ours({"image": image, "label": label}), before({"image": image, "label": label})
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["label"], b["label"])


def test_3d_patches_are_cut_alike_from_image_and_label_and_half_hold_the_lesion():
    transform = training_transforms(EVERY_AUGMENTATION | {"intensity": False}, [6, 6, 4], [16, 14, 12])
    transform.set_random_state(seed=0)
    label = np.zeros((1, 16, 14, 12), dtype=np.float32)
    label[0, 11, 3, 9] = 1  # one lesion voxel: a crop at random holds it about 1 time in 15
    image = np.random.default_rng(0).random((2, 16, 14, 12), dtype=np.float32)
    image[0] = label[0]
    with_lesion = 0
    for _ in range(60):
        (out,) = transform({"image": image, "label": label})
        assert out["image"].shape == (2, 6, 6, 4) and out["label"].shape == (1, 6, 6, 4)
        assert torch.equal(out["image"][0], out["label"][0])
        with_lesion += int(out["label"].sum() == 1)
    # Positive and negative centres are drawn 1:1, so about 30 of the 60 crops hold the lesion.
    assert 20 <= with_lesion <= 45


def test_an_item_thinner_than_the_patch_is_padded_so_every_crop_has_the_patch_shape():
    transform = training_transforms(EVERY_AUGMENTATION | {"intensity": False}, [8, 8, 8], [12, 10, 5])
    transform.set_random_state(seed=1)
    image = np.ones((1, 12, 10, 5), dtype=np.float32)
    label = np.zeros((1, 12, 10, 5), dtype=np.float32)
    label[0, 6, 5, 2] = 1
    for _ in range(5):
        (crop,) = transform({"image": image, "label": label})
        assert tuple(crop["image"].shape) == (1, 8, 8, 8) and tuple(crop["label"].shape) == (1, 8, 8, 8)
        # The padding is zeros, and the five real slices are all there.
        assert crop["image"].sum() == pytest.approx(8 * 8 * 5)
