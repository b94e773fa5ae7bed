"""MONAI regression networks (one output per volume), per-sample losses, and their one input size.

Never downloads pretrained weights and never hard-codes 3D: sizes derive from `spatial_dims`.
Shared by the train and infer_scores stages, so a volume is fitted to the network alike in both.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from monai.networks import nets
from monai.networks.layers.factories import Pool
from monai.networks.nets.segresnet_ds import SegResEncoder
from monai.transforms import ResizeWithPadOrCrop
from monai.utils import convert_to_numpy

from lesionflow.model.networks import build_named
from lesionflow.pipeline.errors import LesionflowError


class SegResNetRegressor(torch.nn.Module):
    """SegResNet's encoder (MONAI SegResEncoder), global average pooling and a linear head."""

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        init_filters: int,
        blocks_down: Sequence[int],
        **encoder_kwargs: Any,
    ) -> None:
        super().__init__()
        self.encoder = SegResEncoder(
            spatial_dims=spatial_dims, init_filters=init_filters, in_channels=in_channels,
            blocks_down=tuple(blocks_down), **encoder_kwargs,
        )
        self.pool = Pool[Pool.ADAPTIVEAVG, spatial_dims](1)
        # The encoder doubles its filters at every level, the last one included.
        self.head = torch.nn.Linear(init_filters * 2 ** (len(blocks_down) - 1), out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, *spatial) to (B, out_channels): the deepest features, pooled, through the head."""
        deepest = self.encoder(x)[-1]
        return self.head(torch.flatten(self.pool(deepest), 1))


def _resnet(builder: Callable[..., torch.nn.Module]) -> Callable[..., torch.nn.Module]:
    def build(spatial_dims: int, in_channels: int, out_channels: int, **kwargs: Any) -> torch.nn.Module:
        # pretrained=False always: MONAI would otherwise download MedicalNet weights.
        return builder(
            pretrained=False, spatial_dims=spatial_dims, n_input_channels=in_channels,
            num_classes=out_channels, feed_forward=True, **kwargs,
        )

    return build


def _densenet(spatial_dims: int, in_channels: int, out_channels: int, **kwargs: Any) -> torch.nn.Module:
    return nets.DenseNet121(
        spatial_dims=spatial_dims, in_channels=in_channels, out_channels=out_channels,
        pretrained=False, **kwargs,
    )


REGRESSORS: dict[str, Callable[..., torch.nn.Module]] = {
    "ResNet10": _resnet(nets.resnet10),
    "ResNet18": _resnet(nets.resnet18),
    "ResNet34": _resnet(nets.resnet34),
    "DenseNet121": _densenet,
    "SegResNetEncoder": SegResNetRegressor,
}

LOSSES: dict[str, Callable[[], torch.nn.Module]] = {
    "MSE": lambda: torch.nn.MSELoss(reduction="none"),
    "L1": lambda: torch.nn.L1Loss(reduction="none"),
    "Huber": lambda: torch.nn.HuberLoss(reduction="none", delta=1.0),
}

# Arguments lesionflow sets itself (from the data, or to keep weights local and one output).
RESERVED_KWARGS = frozenset({
    "spatial_dims", "in_channels", "out_channels", "n_input_channels", "num_classes",
    "pretrained", "progress", "feed_forward", "head_module",
})


def default_kwargs(network: str) -> dict[str, Any]:
    """Small, CPU-friendly constructor arguments for ``network`` that the user's kwargs override.

    ResNets keep MONAI's depth but half its width, and a stride-2 first convolution (as
    MedicalNet's), which makes a 40x40x28 volume several times cheaper; DenseNet121 keeps its
    121 layers with a quarter of the features; the SegResNet encoder starts from 8 filters.
    """
    if network.startswith("ResNet"):
        return {"widen_factor": 0.5, "conv1_t_stride": 2}
    if network == "DenseNet121":
        return {"init_features": 16, "growth_rate": 8}
    if network == "SegResNetEncoder":
        return {"init_filters": 8, "blocks_down": (1, 2, 2, 4)}
    raise KeyError(network)


def build_regressor(model_settings: dict[str, Any], in_channels: int) -> torch.nn.Module:
    """Build the regressor named by ``model_settings = {network, spatial_dims, kwargs}``: one output."""
    return build_named(
        REGRESSORS, "regressor", model_settings, (in_channels, 1),
        lambda name, _spatial_dims: default_kwargs(name), RESERVED_KWARGS,
    )


def check_input_size(model: torch.nn.Module, in_channels: int, roi_size: Sequence[int]) -> None:
    """Raise LesionflowError naming train.patch_size if ``model`` cannot take a ``roi_size`` volume.

    DenseNet121, for one, pools every axis down by 32 and fails on volumes under 32 voxels a side.
    """
    probe = torch.zeros((2, in_channels, *roi_size), device=next(model.parameters()).device)
    was_training = model.training
    model.eval()  # no batch-norm statistics are updated by the probe
    try:
        with torch.no_grad():
            out = model(probe)
    except RuntimeError as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise LesionflowError(
            f"train.patch_size: the network cannot take inputs of {list(roi_size)} voxels "
            f"({reason}); use a larger patch size or another model.network"
        ) from None
    finally:
        model.train(was_training)
    if tuple(out.shape) != (2, 1):
        raise LesionflowError(
            f"model.kwargs: the regressor gives outputs of shape {tuple(out.shape[1:])}, expected (1,)"
        )


def build_regression_loss(name: str) -> torch.nn.Module:
    """The per-sample loss ``name`` (MSE, L1 or Huber with delta 1): reduction 'none'."""
    if name not in LOSSES:
        raise LesionflowError(
            f"train.loss: unknown regression loss {name!r}; expected one of {', '.join(LOSSES)}"
        )
    return LOSSES[name]()


def fit_to_roi(image: np.ndarray, roi_size: Sequence[int]) -> np.ndarray:
    """A ``(C, *spatial)`` volume centre padded (zeros) or cropped to ``roi_size``, as float32.

    Zero is the background of a normalised volume, so padding adds no signal.
    """
    fitted = ResizeWithPadOrCrop(spatial_size=list(roi_size), mode="constant")(image)
    return convert_to_numpy(fitted, dtype=np.float32)
