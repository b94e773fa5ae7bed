"""A network's output channels for several lesion classes, and how they become class probabilities.

- Binary data: one channel, a sigmoid (exactly as before several classes existed).
- Exclusive classes (a label map): background and one channel per class, one softmax over them,
  learnt with Dice + CE (or Focal) on the one-hot target that includes the background.
- Overlapping classes (mask columns) and nested regions: one channel per class or region, a
  sigmoid each, learnt with Dice + BCE per channel (nnU-Net's region-based training).

Everything after the network (sliding windows, TTA, stitching, maps) works on *per-class logits*:
a sigmoid of them gives each class's probability. For exclusive classes
:class:`SoftmaxClassLogits` makes them the logits of the softmax probabilities, so that inference
has one path for every kind.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from lesionflow.data.lesion_classes import LesionClasses, classes_from_record
from lesionflow.model.networks import LOSSES
from lesionflow.pipeline.errors import LesionflowError

# A softmax probability is clamped this far from 0 and 1 before its logit is taken.
_EPSILON = 1e-7


@dataclass(frozen=True)
class ClassHead:
    """The classes a segmentation network predicts: their number and whether one softmax joins them."""

    n_classes: int = 1
    exclusive: bool = False

    @property
    def out_channels(self) -> int:
        """The network's output channels: a background channel first when the classes are exclusive."""
        return self.n_classes + 1 if self.exclusive else self.n_classes

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """Each class's probability, ``(B, n_classes, *spatial)``, from the network's raw logits."""
        if self.exclusive:
            return torch.softmax(logits.float(), dim=1)[:, 1:]
        return torch.sigmoid(logits)

    def target(self, masks: torch.Tensor) -> torch.Tensor:
        """The loss's target from a batch of class masks ``(B, n_classes, *spatial)``: with the
        background channel (no class) first when the classes are exclusive."""
        if not self.exclusive:
            return masks
        return torch.cat([1 - masks.amax(dim=1, keepdim=True), masks], dim=1)


BINARY = ClassHead()


def class_head(classes: LesionClasses | None) -> ClassHead:
    """The head of ``classes`` (None: binary data, one sigmoid channel)."""
    if classes is None:
        return BINARY
    return ClassHead(len(classes.names), classes.exclusive)


def checkpoint_head(checkpoint: Mapping[str, Any]) -> ClassHead:
    """The head a model.pt was trained with (its ``classes`` record; none: binary)."""
    record = checkpoint.get("classes")
    return class_head(None if record is None else classes_from_record(record))


class ClassLoss(torch.nn.Module):
    """The loss of several classes on raw logits and class masks: softmax over background and
    classes, or a sigmoid per channel, each with Dice pooled as ``batch_dice`` says."""

    def __init__(self, name: str, batch_dice: bool, head: ClassHead) -> None:
        super().__init__()
        if name not in LOSSES:
            raise LesionflowError(f"train.loss: unknown loss {name!r}; expected one of {', '.join(LOSSES)}")
        self.head = head
        activation = {"softmax": True} if head.exclusive else {"sigmoid": True}
        self.loss = LOSSES[name](**activation, batch=batch_dice)

    def forward(self, logits: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """The loss of ``logits`` ``(B, out_channels, ...)`` against class masks ``(B, n_classes, ...)``."""
        return self.loss(logits, self.head.target(masks))


class SoftmaxClassLogits(torch.nn.Module):
    """An exclusive-class network seen as per-class logits: the logit of each class's softmax
    probability (the background's is left out), so that a sigmoid gives the softmax back."""

    def __init__(self, network: torch.nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Per-class logits of the batch ``x``."""
        probabilities = torch.softmax(self.network(x).float(), dim=1)[:, 1:]
        return torch.logit(probabilities.clamp(_EPSILON, 1 - _EPSILON))


def per_class_logits(model: torch.nn.Module, head: ClassHead) -> torch.nn.Module:
    """``model`` as inference sees it: per-class logits whose sigmoid is each class's probability."""
    return SoftmaxClassLogits(model) if head.exclusive else model
