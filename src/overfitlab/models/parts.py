"""A model's parts as fine-tuning sees them: the input adaptation, the head and the body's blocks.

* ``Adapted`` feeds a model images as the weights it starts from expect them: grey repeated to
  their channels, resized to their size, standardized with their mean and std. It wraps the
  model (``adapted.model``), so the model's own keys gain the prefix ``model.``.
* The **head** is the layer that outputs the classes: timm's ``get_classifier()``, else the last
  ``nn.Linear`` (or 1×1 ``nn.Conv2d``) with one output per class. Freezing trains it alone;
  ``--reinit-head`` draws it anew; a checkpoint with another class count fits all but it.
* The **body** is every other parameter, cut into **blocks** in input-to-output order (the
  model's children, a child that holds more than half of the body cut into its own children):
  gradual unfreezing frees them from the head down, discriminative rates lower them toward the
  input (fastai's layer groups, Lightning's backbone).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import OverfitlabError


@dataclass(frozen=True)
class InputAdaptation:
    """What the starting weights expect, which ``Adapted`` gives them."""

    channels: int  # the weights' input channels: a grey image is repeated to them
    size: tuple[int, int] | None  # (H, W) images are resized to; None: as they come
    mean: tuple[float, ...]  # per channel, on the [0, 1] scale
    std: tuple[float, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "channels": self.channels,
            "size": list(self.size) if self.size else None,
            "mean": list(self.mean),
            "std": list(self.std),
        }

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> InputAdaptation:
        size = values.get("size")
        return cls(
            int(values["channels"]),
            (int(size[0]), int(size[1])) if size else None,
            tuple(float(v) for v in values["mean"]),
            tuple(float(v) for v in values["std"]),
        )

    def model_shape(self, in_shape: tuple[int, int, int]) -> tuple[int, int, int]:
        """The shape the wrapped model sees for images of ``in_shape``."""
        height, width = self.size or in_shape[1:]
        return (self.channels, height, width)

    def notes(self, in_shape: tuple[int, int, int]) -> tuple[str, ...]:
        channels, height, width = in_shape
        notes = []
        if channels != self.channels:
            notes.append(f"grey images repeated to {self.channels} channels")
        if self.size is not None and self.size != (height, width):
            notes.append(f"images resized from {height}×{width} to {self.size[0]}×{self.size[1]}")
        mean = ", ".join(f"{v:.3f}" for v in self.mean)
        std = ", ".join(f"{v:.3f}" for v in self.std)
        notes.append(f"pixels standardized with the weights' mean ({mean}) and std ({std})")
        return tuple(notes)


class Adapted(nn.Module):
    """A model fed images in [0, 1] of the data set's shape, adapted as its weights expect."""

    def __init__(self, model: nn.Module, adaptation: InputAdaptation):
        super().__init__()
        self.model = model
        self.adaptation = adaptation
        shape = (1, len(adaptation.mean), 1, 1)
        # Not persistent: the state dict holds the model's own tensors only; the adaptation is
        # recorded beside it (a checkpoint's model_meta) and rebuilt from there.
        self.register_buffer("mean", torch.tensor(adaptation.mean).view(shape), persistent=False)
        self.register_buffer("std", torch.tensor(adaptation.std).view(shape), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] != self.adaptation.channels:
            x = x.expand(-1, self.adaptation.channels, -1, -1)  # grey: the same plane in R, G and B
        size = self.adaptation.size
        if size is not None and tuple(x.shape[-2:]) != size:
            # Bilinear as torchvision's and timm's resize; antialiased only when shrinking.
            shrink = size[0] < x.shape[-2] or size[1] < x.shape[-1]
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=shrink)
        mean, std = self.get_buffer("mean"), self.get_buffer("std")
        out: torch.Tensor = self.model((x - mean) / std)
        return out


def inner(model: nn.Module) -> nn.Module:
    """The model an ``Adapted`` wraps, or the model itself."""
    return model.model if isinstance(model, Adapted) else model


class Head(NamedTuple):
    name: str  # dotted name in the model, e.g. "fc", "classifier.3", "model.fc"
    module: nn.Module

    def holds(self, key: str) -> bool:
        """Whether a state dict key names one of the head's tensors."""
        return key.startswith(self.name + ".")


def _holds_params(module: nn.Module) -> bool:
    return any(True for _ in module.parameters())


def find_head(model: nn.Module, classes: int) -> Head | None:
    """The layer that outputs the classes; None when none is recognisable."""
    names = {id(m): name for name, m in model.named_modules()}
    classifier = getattr(inner(model), "get_classifier", None)
    if callable(classifier):  # timm's models name their own
        found = classifier()
        if isinstance(found, nn.Module) and id(found) in names and _holds_params(found):
            return Head(names[id(found)], found)
    last: Head | None = None
    for name, module in model.named_modules():
        linear = isinstance(module, nn.Linear) and module.out_features == classes
        pointwise = (
            isinstance(module, nn.Conv2d) and module.out_channels == classes and module.kernel_size == (1, 1)
        )
        if linear or pointwise:
            last = Head(name, module)
    return last


def head_or_error(model: nn.Module, classes: int, ref: str, flag: str) -> Head:
    head = find_head(model, classes)
    if head is None:
        raise OverfitlabError(
            f"{flag}: model {ref} has no recognisable head (no get_classifier(), no nn.Linear with "
            f"{classes} outputs): end the model in an nn.Linear(..., {classes}), or leave {flag} out"
        )
    return head


OWN = "(own)"  # a block of the parameters a module holds itself (a ViT's position embedding)


class Block(NamedTuple):
    name: str
    params: tuple[nn.Parameter, ...]


def body_blocks(model: nn.Module, head: Head) -> list[Block]:
    """The body's parameters in blocks, input first; with the head they are every parameter."""
    blocks = _children(model, "", head.name)
    total = sum(p.numel() for block in blocks for p in block.params)
    while True:  # cut the block that holds more than half of the body into its children
        big = [
            k
            for k, b in enumerate(blocks)
            if 2 * sum(p.numel() for p in b.params) > total and not b.name.endswith(OWN)
        ]
        module = model.get_submodule(blocks[big[0]].name) if big else None
        if module is None or sum(1 for c in module.children() if _holds_params(c)) < 2:
            return blocks
        k = big[0]
        blocks[k : k + 1] = _children(module, blocks[k].name + ".", head.name)


def _children(module: nn.Module, prefix: str, head: str) -> list[Block]:
    own = tuple(module.parameters(recurse=False))
    blocks = [Block(prefix + OWN, own)] if own else []
    for name, child in module.named_children():
        full = prefix + name
        if full == head or not _holds_params(child):
            continue
        if head.startswith(full + "."):  # the container that holds the head: its other parts
            blocks += _children(child, full + ".", head)
        else:
            blocks.append(Block(full, tuple(child.parameters())))
    return blocks


def reinitialize(module: nn.Module) -> int:
    """Draw a module's layers anew (each ``reset_parameters``); returns the tensors drawn."""
    drawn = 0
    for layer in module.modules():
        reset = getattr(layer, "reset_parameters", None)
        if callable(reset):
            reset()
            drawn += len(list(layer.parameters(recurse=False)))
    return drawn
