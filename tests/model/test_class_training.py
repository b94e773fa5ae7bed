"""Tests of several lesion classes in training and inference: the head's channels and loss, the
per-class sampler, and probability maps with one channel per class."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from class_runs import build_class_run, tiny_train_settings

from lesionflow.data.class_masks import load_class_masks
from lesionflow.data.manifest import read_manifest
from lesionflow.model import train
from lesionflow.model.class_heads import ClassHead, ClassLoss, SoftmaxClassLogits, class_head
from lesionflow.model.infer import load_model
from lesionflow.model.networks import build_model, read_model_file, restored
from lesionflow.model.sampling import LesionBatchSampler
from lesionflow.pipeline import artifacts
from lesionflow.pipeline.errors import LesionflowError

CLASSES = {"classes": {"exudate": 1, "haemorrhage": 2}}


def test_an_exclusive_head_adds_background_and_its_logits_give_the_softmax_back():
    head = ClassHead(2, exclusive=True)
    assert head.out_channels == 3 and class_head(None).out_channels == 1
    masks = torch.zeros(1, 2, 2, 2)
    masks[0, 0, 0, 0] = masks[0, 1, 1, 1] = 1
    target = head.target(masks)
    assert target.shape == (1, 3, 2, 2)
    np.testing.assert_array_equal(target.sum(dim=1).numpy(), 1)  # one class (or background) per pixel
    network = torch.nn.Conv2d(1, 3, 1)
    x = torch.randn(2, 1, 4, 4)
    expected = torch.softmax(network(x), dim=1)[:, 1:]
    np.testing.assert_allclose(
        torch.sigmoid(SoftmaxClassLogits(network)(x)).detach(), expected.detach(), atol=1e-6
    )
    assert (head.probabilities(network(x)).sum(dim=1) <= 1 + 1e-6).all()


def test_the_class_loss_is_lower_for_the_right_class_than_for_the_wrong_one():
    head = ClassHead(2, exclusive=True)
    loss = ClassLoss("DiceCE", batch_dice=False, head=head)
    masks = torch.zeros(1, 2, 4, 4)
    masks[0, 0, :2] = 1  # exudate on top, haemorrhage below
    masks[0, 1, 2:] = 1
    right = 10 * head.target(masks) - 5
    wrong = 10 * head.target(masks.flip(1)) - 5
    assert float(loss(right, masks)) < float(loss(wrong, masks))
    with pytest.raises(LesionflowError, match="train.loss: unknown loss 'Dice'"):
        ClassLoss("Dice", False, head)


def test_each_positive_draw_picks_a_class_first_so_a_rare_class_is_drawn_often():
    flags = np.zeros((40, 2), dtype=bool)
    flags[:20, 0] = True  # half the images show the common class
    flags[39, 1] = True  # one image shows the rare one
    sampler = LesionBatchSampler(flags, batch_size=8, positive_fraction=1.0, seed=0)
    drawn = [index for _ in range(10) for batch in sampler for index in batch]
    share = drawn.count(39) / len(drawn)
    assert 0.35 < share < 0.65, share
    plain = LesionBatchSampler(flags.any(axis=1), batch_size=8, positive_fraction=1.0, seed=0)
    assert [index for _ in range(10) for batch in plain for index in batch].count(39) / len(drawn) < 0.1


@pytest.fixture(scope="module")
def class_run(tmp_path_factory):
    """The photographs with haemorrhages, resized, trained two epochs, val and test predicted."""
    run = build_class_run(tmp_path_factory.mktemp("class-run"))
    return run["root"], run["summary"]


def test_a_class_model_has_background_and_a_channel_per_class_and_records_its_classes(class_run):
    root, summary = class_run
    checkpoint = read_model_file(root / "train" / "model.pt", torch.device("cpu"))
    assert checkpoint["out_channels"] == 3
    assert checkpoint["classes"]["names"] == ["exudate", "haemorrhage"]
    assert np.isfinite(summary["best_val_dice_pos"])


def test_maps_hold_one_probability_per_class_at_the_original_size(class_run):
    root, _ = class_run
    rows = read_manifest(root / "data" / "manifest.csv").set_index("image_id")
    record = artifacts.read_json(root / "infer" / "test_infer.json")
    assert record["classes"] == ["exudate", "haemorrhage"]
    maps = artifacts.load_arrays(root / "infer" / "test.npz")
    assert len(maps) == record["n_images"] > 0
    for image_id, prob in maps.items():
        stack = load_class_masks(rows.loc[image_id].to_dict())
        assert prob.shape == stack.shape == (2, 48, 48)
        assert prob.min() >= 0 and (prob.astype(np.float32).sum(axis=0) <= 1 + 2e-3).all()
    items = artifacts.load_arrays(root / "infer" / "test_tiles.npz")
    assert all(item.shape == (2, 32, 32) for item in items.values())


def test_an_items_map_is_the_softmax_of_the_network_averaged_over_tta(class_run):
    root, _ = class_run
    model, checkpoint = load_model(root / "train" / "model.pt", torch.device("cpu"))
    raw = restored(build_model(checkpoint["model_settings"], 3, False, 3), checkpoint, torch.device("cpu"))
    items = read_manifest(root / "pre" / "manifest.csv").set_index("image_id")
    name, saved = next(iter(artifacts.load_arrays(root / "infer" / "val_tiles.npz").items()))
    from lesionflow.io.readers import read_image

    x = torch.from_numpy(read_image(items.loc[name, "image"]).array[None]).float()
    with torch.no_grad():
        plain = torch.softmax(raw(x), dim=1)[:, 1:]
        flipped = torch.softmax(raw(x.flip(-1)), dim=1)[:, 1:].flip(-1)
    np.testing.assert_allclose(saved.astype(np.float32), ((plain + flipped) / 2)[0].numpy(), atol=2e-3)


def test_a_presence_head_is_refused_with_several_classes(class_run, tmp_path):
    root, _ = class_run
    settings = tiny_train_settings(epochs=1)
    settings["model"]["presence_head"] = True
    with pytest.raises(LesionflowError, match="model.presence_head: a presence head is for one lesion class"):
        train.run_train(root / "pre" / "manifest.csv", root / "pre" / "split.csv", settings, tmp_path)
