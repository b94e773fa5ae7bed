"""Tests of lesionflow.model.networks: every MONAI network builds by name in 2D and 3D; the forward path."""

import pytest
import torch

from lesionflow.model.networks import (
    NETWORKS,
    build_loss,
    build_network,
    forward_logits,
    resolve_device,
)
from lesionflow.pipeline.config import complete_run_section
from lesionflow.pipeline.errors import LesionflowError

# The schema's settings, where a test's outcome does not depend on them.
BATCH_DICE = complete_run_section("train", {})["batch_dice"]
SW_OVERLAP = complete_run_section("infer", {})["sw_overlap"]


@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("network", sorted(NETWORKS))
def test_every_network_builds_and_keeps_the_input_shape(network, spatial_dims):
    model = build_network({"network": network, "spatial_dims": spatial_dims, "kwargs": {}}, 3)
    x = torch.rand((2, 3) + (32,) * spatial_dims)
    model.eval()
    with torch.no_grad():
        y = model(x)
    assert y.shape == (2, 1) + (32,) * spatial_dims


def test_user_kwargs_override_the_defaults():
    model = build_network(
        {"network": "UNet", "spatial_dims": 2, "kwargs": {"channels": [4, 8], "strides": [2]}}, 1
    )
    assert sum(p.numel() for p in model.parameters()) < 5_000


def test_unknown_network_error_names_the_key_and_lists_valid_names():
    with pytest.raises(LesionflowError) as err:
        build_network({"network": "ResNet50", "spatial_dims": 2, "kwargs": {}}, 3)
    message = str(err.value)
    assert "model.network" in message
    for name in NETWORKS:
        assert name in message


def test_bad_kwargs_error_names_model_kwargs_and_the_reason():
    with pytest.raises(LesionflowError, match=r"model\.kwargs.*no_such_argument"):
        build_network(
            {"network": "SegResNet", "spatial_dims": 2, "kwargs": {"no_such_argument": 1}}, 3
        )


def test_channels_in_kwargs_are_refused_because_lesionflow_sets_them():
    with pytest.raises(LesionflowError, match=r"model\.kwargs.*in_channels"):
        build_network({"network": "UNet", "spatial_dims": 2, "kwargs": {"in_channels": 1}}, 3)


@pytest.mark.parametrize("name", ["DiceCE", "DiceFocal"])
def test_loss_is_small_for_a_confident_correct_prediction(name):
    loss = build_loss(name, BATCH_DICE)
    target = torch.zeros((1, 1, 8, 8))
    target[..., 2:5, 2:5] = 1
    logits = (target * 2 - 1) * 20
    assert float(loss(logits, target)) < 0.01
    assert float(loss(-logits, target)) > 0.5


def test_unknown_loss_error_names_train_loss():
    with pytest.raises(LesionflowError, match=r"train\.loss.*DiceCE"):
        build_loss("Tversky", BATCH_DICE)


def test_cpu_device_resolves_and_bad_name_names_the_setting():
    assert resolve_device("cpu", "train.device").type == "cpu"
    with pytest.raises(LesionflowError, match=r"train\.device"):
        resolve_device("tpu", "train.device")


def test_batch_dice_gives_a_lesion_free_sample_no_dice_term_of_its_own():
    logits = torch.full((2, 1, 8, 8), -3.0)
    target = torch.zeros((2, 1, 8, 8))
    target[0, 0, 2:5, 2:5] = 1
    logits[0, 0, 2:5, 2:5] = 3.0  # the lesion is found; the empty sample has faint probabilities
    per_image = build_loss("DiceCE", batch_dice=False).dice(logits, target)
    pooled = build_loss("DiceCE", batch_dice=True).dice(logits, target)
    # per image, the lesion-free sample scores a Dice loss near 1 for its faint prediction
    assert per_image > 0.55 and pooled < 0.3


class _ShapeRecorder(torch.nn.Module):
    """A pointwise network that records the spatial shapes it is called on."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 1, 1)
        self.shapes: list[tuple[int, ...]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.shapes.append(tuple(x.shape[2:]))
        return self.conv(x)


@pytest.mark.parametrize("roi_size", [None, [16, 24]])
def test_forward_logits_takes_one_direct_pass_for_whole_images_or_the_roi_shape(roi_size):
    model = _ShapeRecorder()
    forward_logits(model, torch.rand((2, 3, 16, 24)), roi_size, 2, SW_OVERLAP)
    assert model.shapes == [(16, 24)]


@pytest.mark.parametrize("shape", [(40, 48), (8, 8)])
def test_forward_logits_slides_roi_windows_over_larger_and_smaller_images(shape):
    # A smaller image is padded to the roi rather than passed directly, for UNet divisibility.
    model = _ShapeRecorder()
    batch = torch.rand((2, 3, *shape))
    with torch.no_grad():
        logits = forward_logits(model, batch, [16, 16], 2, SW_OVERLAP)
        direct = model.conv(batch)
    assert logits.shape == (2, 1, *shape)
    assert model.shapes and set(model.shapes) == {(16, 16)}
    # A pointwise network gives the same logits whichever windows it sees.
    torch.testing.assert_close(logits, direct, atol=1e-5, rtol=1e-5)
