"""Tests of lesionflow.model.sampling: lesion oversampling, plain shuffling and augmentations."""

import numpy as np
import torch

from lesionflow.model.sampling import LesionBatchSampler, training_transforms


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
