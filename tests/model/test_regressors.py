"""Tests of lesionflow.model.regressors: every regressor builds by name, one output; losses; input size."""

import numpy as np
import pytest
import torch

from lesionflow.model.regressors import (
    LOSSES,
    REGRESSORS,
    RESERVED_KWARGS,
    build_regression_loss,
    build_regressor,
    check_input_size,
    fit_to_roi,
)
from lesionflow.pipeline.errors import LesionflowError

# DenseNet121 pools every axis by 32 (a stride-2 stem, a max pool and three transitions), so it
# needs about 32 voxels a side; the others take 16.
SMALLEST_SIDE = {name: 32 if name == "DenseNet121" else 16 for name in REGRESSORS}


def settings(network, spatial_dims=3, **kwargs):
    return {"network": network, "spatial_dims": spatial_dims, "kwargs": kwargs}


# Narrow versions, so that the 2D cases stay fast.
NARROW = {
    "ResNet10": {"widen_factor": 0.125},
    "ResNet18": {"widen_factor": 0.125},
    "ResNet34": {"widen_factor": 0.125},
    "DenseNet121": {"init_features": 8, "growth_rate": 4},
    "SegResNetEncoder": {"init_filters": 4},
}


@pytest.mark.parametrize("network", sorted(REGRESSORS))
def test_every_regressor_maps_a_batch_of_volumes_to_one_score_each(network):
    model = build_regressor(settings(network), in_channels=2).eval()
    side = SMALLEST_SIDE[network]
    with torch.no_grad():
        y = model(torch.rand((2, 2) + (side,) * 3))
    assert y.shape == (2, 1)
    check_input_size(model, 2, [side] * 3)


@pytest.mark.parametrize("network", sorted(REGRESSORS))
def test_every_regressor_also_builds_in_2d(network):
    model = build_regressor(settings(network, 2, **NARROW[network]), in_channels=3).eval()
    side = SMALLEST_SIDE[network]
    with torch.no_grad():
        assert model(torch.rand((2, 3, side, side))).shape == (2, 1)


def test_densenet_on_volumes_too_small_for_its_pooling_names_train_patch_size():
    model = build_regressor(settings("DenseNet121", **NARROW["DenseNet121"]), in_channels=1)
    with pytest.raises(LesionflowError, match=r"train\.patch_size.*\[16, 16, 16\]"):
        check_input_size(model, 1, [16, 16, 16])
    # The probe leaves the model as it found it.
    assert model.training


def test_user_kwargs_override_the_small_defaults():
    default = build_regressor(settings("ResNet10"), 1)
    narrow = build_regressor(settings("ResNet10", widen_factor=0.125), 1)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(narrow) < count(default) / 10
    encoder = build_regressor(settings("SegResNetEncoder", init_filters=4, blocks_down=[1, 1]), 1)
    assert encoder.head.in_features == 8


def test_unknown_regressor_names_model_network_and_lists_the_valid_names():
    with pytest.raises(LesionflowError) as err:
        build_regressor(settings("UNet"), 1)
    assert "model.network" in str(err.value)
    assert all(name in str(err.value) for name in REGRESSORS)


@pytest.mark.parametrize("reserved", sorted(RESERVED_KWARGS))
def test_arguments_lesionflow_sets_are_refused_in_model_kwargs(reserved):
    with pytest.raises(LesionflowError, match=rf"model\.kwargs.*{reserved}"):
        build_regressor({"network": "ResNet18", "spatial_dims": 3, "kwargs": {reserved: 1}}, 1)


def test_a_bad_argument_names_model_kwargs_and_the_network():
    with pytest.raises(LesionflowError, match=r"model\.kwargs.*DenseNet121.*no_such_argument"):
        build_regressor(settings("DenseNet121", no_such_argument=1), 1)


def test_bad_spatial_dims_names_model_spatial_dims():
    with pytest.raises(LesionflowError, match=r"model\.spatial_dims"):
        build_regressor(settings("ResNet10", spatial_dims=4), 1)


@pytest.mark.parametrize(
    ("name", "reference"),
    [
        ("MSE", torch.nn.functional.mse_loss),
        ("L1", torch.nn.functional.l1_loss),
        ("Huber", torch.nn.functional.huber_loss),
    ],
)
def test_regression_losses_are_per_sample(name, reference):
    predicted = torch.tensor([[0.0], [1.0], [4.0]])
    target = torch.tensor([[0.5], [3.0], [4.0]])
    loss = build_regression_loss(name)(predicted, target)
    assert loss.shape == (3, 1)
    torch.testing.assert_close(loss, reference(predicted, target, reduction="none"))
    torch.testing.assert_close(loss.mean(), reference(predicted, target))


def test_unknown_loss_names_train_loss_and_lists_the_valid_names():
    with pytest.raises(LesionflowError) as err:
        build_regression_loss("DiceCE")
    assert "train.loss" in str(err.value) and all(name in str(err.value) for name in LOSSES)


def test_fit_to_roi_centre_pads_with_zeros_and_centre_crops():
    volume = np.arange(1 * 4 * 6 * 3, dtype=np.float32).reshape(1, 4, 6, 3) + 1
    fitted = fit_to_roi(volume, [8, 2, 3])
    assert fitted.shape == (1, 8, 2, 3) and fitted.dtype == np.float32
    np.testing.assert_array_equal(fitted[:, 2:6], volume[:, :, 2:4])
    assert not fitted[:, :2].any() and not fitted[:, 6:].any()
    np.testing.assert_array_equal(fit_to_roi(volume, [4, 6, 3]), volume)
