"""A segmentation network with an image-level lesion-presence head on its bottleneck, and its loss.

Never changes what the wrapped network computes: the head only reads the bottleneck through a hook.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from monai.networks.layers import SkipConnection
from monai.networks.nets import AttentionUnet, BasicUNet, DynUNet, SegResNet, UNet
from monai.networks.nets.attentionunet import AttentionLayer
from torch import nn

from lesionflow.pipeline.errors import LesionflowError

# A small normal init keeps an untrained head near logit 0 (probability 0.5) whatever the channel
# count, yet non-zero, so the presence loss reaches the encoder from the first step.
_HEAD_INIT_STD = 0.01


def _is_unet_level(block: nn.Module) -> bool:
    # UNet._get_connection_block builds every level as Sequential(down, SkipConnection(sub), up).
    return isinstance(block, nn.Sequential) and len(block) == 3 and isinstance(block[1], SkipConnection)


def _unet_bottom(network: UNet) -> nn.Module:
    """UNet's bottom layer (``_get_bottom_layer``): the innermost SkipConnection's submodule."""
    block = network.model
    while _is_unet_level(block):
        block = block[1].submodule
    return block


def _attention_unet_bottom(network: AttentionUnet) -> nn.Module:
    """AttentionUnet's bottom ConvBlock: the submodule of the innermost AttentionLayer.

    Every other level's submodule is Sequential(ConvBlock, next AttentionLayer).
    """
    layer = network.model[1]
    while (
        isinstance(layer.submodule, nn.Sequential)
        and len(layer.submodule) == 2
        and isinstance(layer.submodule[1], AttentionLayer)
    ):
        layer = layer.submodule[1]
    return layer.submodule


# Exact types: a subclass may route its forward around these modules (CheckpointUNet wraps the
# levels, SegResNetVAE adds a branch), so it counts as unknown rather than silently mis-hooked.
_BOTTLENECKS: dict[type, Callable[[nn.Module], nn.Module]] = {
    UNet: _unet_bottom,
    AttentionUnet: _attention_unet_bottom,
    BasicUNet: lambda network: network.down_4,
    SegResNet: lambda network: network.down_layers[-1],
    DynUNet: lambda network: network.bottleneck,
}


def _output_channels(module: nn.Module) -> int:
    """Channels of the last convolution registered in ``module``: what every bottleneck above ends in."""
    convs = [m for m in module.modules() if isinstance(m, nn.modules.conv._ConvNd)]
    if not convs:
        raise LesionflowError(f"model.network: {type(module).__name__} bottleneck holds no convolution")
    return int(convs[-1].out_channels)


def bottleneck_of(network: nn.Module) -> tuple[nn.Module, int]:
    """The module whose output is ``network``'s deepest feature map, and that map's channel count.

    Known: the MONAI UNet, BasicUNet, SegResNet, AttentionUnet and DynUNet that networks.py builds.
    """
    find = _BOTTLENECKS.get(type(network))
    if find is None:
        known = ", ".join(kind.__name__ for kind in _BOTTLENECKS)
        raise LesionflowError(
            f"model.network: no presence head for {type(network).__name__}; expected one of {known}"
        )
    module = find(network)
    return module, _output_channels(module)


class DualHead(nn.Module):
    """A segmentation network plus a presence logit from its global-average-pooled bottleneck.

    ``forward(x)`` returns ``(segmentation_logits, presence_logit)``, the first exactly what the
    wrapped network returns (DynUNet's stacked deep-supervision maps in training mode included),
    the second of shape (N,). ``network`` alone is the segmentation path (sliding windows, TTA):
    calling it keeps no features.
    """

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network
        bottleneck, channels = bottleneck_of(network)
        self.head = nn.Linear(channels, 1)
        nn.init.normal_(self.head.weight, std=_HEAD_INIT_STD)
        nn.init.zeros_(self.head.bias)
        # None outside DualHead.forward: the hook then keeps nothing alive.
        self._captured: list[torch.Tensor] | None = None
        # A bound method, so a deepcopy of the model hooks its own copy; hooks are not in state_dict,
        # so loading weights leaves this one in place.
        self._hook = bottleneck.register_forward_hook(self._capture)

    def _capture(self, module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        if self._captured is not None:
            self._captured.append(output)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Segmentation logits as the wrapped network gives them, and one presence logit per image."""
        self._captured = []
        try:
            segmentation = self.network(x)
            captured = self._captured
        finally:
            self._captured = None
        if len(captured) != 1:
            raise RuntimeError(f"the bottleneck ran {len(captured)} times in one forward pass, expected 1")
        return segmentation, self.presence_logit(captured[0])

    def presence_logit(self, features: torch.Tensor) -> torch.Tensor:
        """The head's logit, shape (N,), of bottleneck ``features`` (N, C, *spatial), 2D or 3D."""
        pooled = features.flatten(2).mean(dim=2)
        return self.head(pooled).squeeze(1)


def presence_targets(masks: torch.Tensor) -> torch.Tensor:
    """1.0 for each image (first axis) whose mask has any lesion voxel, else 0.0; shape (N,)."""
    return (masks.flatten(1) > 0).any(dim=1).float()


def dual_head_loss(
    seg_loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    seg_logits: torch.Tensor,
    presence_logit: torch.Tensor,
    masks: torch.Tensor,
    weight: float,
) -> tuple[torch.Tensor, dict[str, float]]:
    """``seg_loss(seg_logits, masks) + weight * BCEWithLogits(presence_logit, presence of masks)``.

    Returns the total to backpropagate and its parts as floats for logging: ``loss``,
    ``segmentation_loss``, ``presence_loss``. ``seg_loss`` gets the logits as they are: for
    DynUNet's deep supervision it must accept the stacked maps.
    """
    segmentation = seg_loss(seg_logits, masks)
    presence = F.binary_cross_entropy_with_logits(presence_logit.float(), presence_targets(masks))
    total = segmentation + float(weight) * presence
    parts = {
        "loss": float(total.detach()),
        "segmentation_loss": float(segmentation.detach()),
        "presence_loss": float(presence.detach()),
    }
    return total, parts
