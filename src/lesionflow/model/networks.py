"""MONAI segmentation networks and losses by name, the one forward path, and model.pt reading and building.

Never hard-codes 2D: defaults derive from `spatial_dims`; in/out channels come from the data.

A dual-head model (lesionflow.model.dual_head.DualHead) segments through its wrapped network alone:
every path that wants segmentation maps goes through :func:`segmentation_network`.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable, Sequence
from typing import Any

import torch
from monai.inferers import sliding_window_inference
from monai.losses import DiceCELoss, DiceFocalLoss
from monai.networks import nets

from lesionflow.model.dual_head import DualHead
from lesionflow.pipeline.errors import LesionflowError

NETWORKS: dict[str, Callable[..., torch.nn.Module]] = {
    "UNet": nets.UNet,
    "BasicUNet": nets.BasicUNet,
    "SegResNet": nets.SegResNet,
    "AttentionUnet": nets.AttentionUnet,
    "DynUNet": nets.DynUNet,
}

LOSSES: dict[str, Callable[..., torch.nn.Module]] = {
    "DiceCE": DiceCELoss,
    "DiceFocal": DiceFocalLoss,
}

# Every default network downsamples by 8 (BasicUNet: 16); patch and image sides should be multiples.
_UNET_CHANNELS = (16, 32, 64, 128)
_UNET_STRIDES = (2, 2, 2)


def default_kwargs(network: str, spatial_dims: int) -> dict[str, Any]:
    """Small, CPU-friendly constructor arguments for ``network`` that the user's kwargs override."""
    if network in ("UNet", "AttentionUnet"):
        defaults: dict[str, Any] = {"channels": _UNET_CHANNELS, "strides": _UNET_STRIDES}
        if network == "UNet":
            defaults["num_res_units"] = 1
        return defaults
    if network == "BasicUNet":
        return {"features": (16, 16, 32, 64, 128, 16)}
    if network == "SegResNet":
        return {"init_filters": 8}
    if network == "DynUNet":
        # DynUNet wants one kernel / stride per level; the first level keeps full resolution.
        kernel = [3] * spatial_dims
        down = [2] * spatial_dims
        return {
            "kernel_size": [kernel] * 4,
            "strides": [[1] * spatial_dims] + [down] * 3,
            "upsample_kernel_size": [down] * 3,
            "filters": list(_UNET_CHANNELS),
        }
    raise KeyError(network)


def build_named(
    registry: dict[str, Callable[..., torch.nn.Module]],
    kind: str,
    model_settings: dict[str, Any],
    channels: tuple[int, int],
    defaults: Callable[[str, int], dict[str, Any]],
    reserved: frozenset[str],
) -> torch.nn.Module:
    """Build the ``kind`` (network, regressor) of ``registry`` that ``model_settings`` names.

    ``channels`` are (in, out); ``defaults(name, spatial_dims)`` gives the constructor arguments
    that ``model_settings['kwargs']`` override, which must not set any of ``reserved``.
    """
    name = model_settings.get("network")
    if name not in registry:
        raise LesionflowError(
            f"model.network: unknown {kind} {name!r}; expected one of {', '.join(registry)}"
        )
    spatial_dims = model_settings.get("spatial_dims")
    if spatial_dims not in (2, 3):
        raise LesionflowError(f"model.spatial_dims: expected 2 or 3, got {spatial_dims!r}")
    user_kwargs = dict(model_settings.get("kwargs") or {})
    taken = reserved & set(user_kwargs)
    if taken:
        raise LesionflowError(
            f"model.kwargs: {', '.join(sorted(taken))} are set by lesionflow; remove them"
        )
    kwargs = {**defaults(name, spatial_dims), **user_kwargs}
    try:
        return registry[name](
            spatial_dims=spatial_dims, in_channels=channels[0], out_channels=channels[1], **kwargs
        )
    except (TypeError, ValueError, AssertionError, KeyError) as err:
        # MONAI reports bad arguments as TypeError (unknown name) or ValueError/assert (bad value).
        raise LesionflowError(f"model.kwargs: {name} rejected {user_kwargs!r}: {err}") from None


def build_network(
    model_settings: dict[str, Any], in_channels: int, out_channels: int = 1
) -> torch.nn.Module:
    """Build the MONAI network named by ``model_settings = {network, spatial_dims, kwargs}``."""
    return build_named(
        NETWORKS, "network", model_settings, (in_channels, out_channels), default_kwargs,
        frozenset({"spatial_dims", "in_channels", "out_channels"}),
    )


def build_model(
    model_settings: dict[str, Any], in_channels: int, presence_head: bool, out_channels: int = 1
) -> torch.nn.Module:
    """:func:`build_network`, wrapped in a DualHead when ``presence_head`` (model.presence_head).

    The head is made after the network, so the network's initial weights are those of a model
    without a head built from the same RNG state.
    """
    network = build_network(model_settings, in_channels, out_channels)
    return DualHead(network) if presence_head else network


def segmentation_network(model: torch.nn.Module) -> torch.nn.Module:
    """The module that gives ``model``'s segmentation logits: a DualHead's network, else ``model``."""
    return model.network if isinstance(model, DualHead) else model


def read_model_file(model_path: str | os.PathLike, device: torch.device) -> dict[str, Any]:
    """The train stage's model.pt, loaded onto ``device``; a LesionflowError naming it if unreadable."""
    try:
        return torch.load(model_path, map_location=device, weights_only=True)
    except (OSError, RuntimeError, EOFError, pickle.UnpicklingError) as err:
        reason = str(err).splitlines()[0]
        raise LesionflowError(f"{model_path}: cannot read the checkpoint ({reason})") from None


def restored(model: torch.nn.Module, checkpoint: dict[str, Any], device: torch.device) -> torch.nn.Module:
    """``model`` with the checkpoint's weights, on ``device``, in eval mode."""
    model.load_state_dict(checkpoint["state_dict"])
    return model.to(device).eval()


def build_loss(name: str, batch_dice: bool, out_channels: int = 1) -> torch.nn.Module:
    """The MONAI loss ``name`` (DiceCE or DiceFocal) on logits; sigmoid for one output channel.

    ``batch_dice`` pools the Dice over the whole batch instead of averaging it per sample: a
    lesion-free tile then adds no Dice term of its own, which otherwise scores about 1 for any
    faint prediction and drives a model trained on sparse-lesion tiles to predict nothing.
    """
    if name not in LOSSES:
        raise LesionflowError(
            f"train.loss: unknown loss {name!r}; expected one of {', '.join(LOSSES)}"
        )
    if out_channels == 1:
        return LOSSES[name](sigmoid=True, batch=batch_dice)
    return LOSSES[name](softmax=True, to_onehot_y=True, batch=batch_dice)


def resolve_device(name: str, setting: str) -> torch.device:
    """``auto`` is CUDA when present, else CPU; asking for ``cuda`` without one is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise LesionflowError(f"{setting}: 'cuda' requested but no CUDA device is available")
    if name not in ("cpu", "cuda"):
        raise LesionflowError(f"{setting}: expected auto, cpu or cuda, got {name!r}")
    return torch.device(name)


def forward_logits(
    model: torch.nn.Module,
    batch: torch.Tensor,
    roi_size: Sequence[int] | None,
    sw_batch_size: int,
    sw_overlap: float,
) -> torch.Tensor:
    """Logits of a (B, C, *spatial) batch: one pass if it has the roi's shape, else sliding window.

    ``roi_size=None`` means the network sees every image whole. An image smaller than the roi
    also goes through the sliding window, which pads it to the roi: a direct pass could break
    the network's divisibility (e.g. by 8 for the default UNet).
    """
    network = segmentation_network(model)
    if roi_size is None or tuple(batch.shape[2:]) == tuple(roi_size):
        return network(batch)
    return sliding_window_inference(
        batch, roi_size=tuple(roi_size), sw_batch_size=sw_batch_size, predictor=network,
        overlap=sw_overlap, mode="gaussian",
    )


class _HighestPresence:
    """A sliding-window predictor: a DualHead's segmentation, keeping each image's highest head logit."""

    def __init__(self, model: DualHead, n_images: int, device: torch.device) -> None:
        self.model = model
        self.highest = torch.full((n_images,), -torch.inf, dtype=torch.float32, device=device)

    def __call__(self, windows: torch.Tensor, coords: Sequence[Sequence[slice]]) -> torch.Tensor:
        segmentation, presence = self.model(windows)
        # MONAI gives each window's slices, the first one selecting its image of the batch.
        images = torch.tensor([coord[0].start for coord in coords], device=self.highest.device)
        self.highest.scatter_reduce_(0, images, presence.float(), reduce="amax")
        return segmentation


def forward_with_presence(
    model: DualHead,
    batch: torch.Tensor,
    roi_size: Sequence[int] | None,
    sw_batch_size: int,
    sw_overlap: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`forward_logits` of a DualHead, and each image's presence logit, shape (B,).

    The presence logit is the head's on the whole input in one pass; under a sliding window, the
    highest over the windows (the most lesion-like window decides, as a max-probability score does).
    The segmentation is exactly what :func:`forward_logits` gives.
    """
    if roi_size is None or tuple(batch.shape[2:]) == tuple(roi_size):
        segmentation, presence = model(batch)
        return segmentation, presence.float()
    recorder = _HighestPresence(model, batch.shape[0], batch.device)
    segmentation = sliding_window_inference(
        batch, roi_size=tuple(roi_size), sw_batch_size=sw_batch_size, predictor=recorder,
        overlap=sw_overlap, mode="gaussian", with_coord=True,
    )
    return segmentation, recorder.highest
