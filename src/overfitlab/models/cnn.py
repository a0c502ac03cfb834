"""The tutorial's CNN family: one builder, named presets."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import nn
from torch.nn.modules import module as module_impl  # the global forward-hook registries

from ..errors import OverfitlabError
from .fast_dropout import FastDropout
from .registry import Factory, register_model


@dataclass(frozen=True)
class ModelSpec:
    hidden: int = 8
    blocks: int = 2
    batchnorm: bool = True
    dropout: float = 0.1
    head: str = "fc"
    fc_width: int = 100


# The tutorial's three classes, as CNN options.
PRESETS: dict[str, ModelSpec] = {
    # its ``CNN``: BN + Dropout(0.1) in both blocks, FC head
    "seed-cnn": ModelSpec(hidden=8, batchnorm=True, dropout=0.1, head="fc"),
    # its ``FCcnn``: plain conv blocks, flatten + FC head
    "seed-fc": ModelSpec(hidden=8, batchnorm=False, dropout=0.0, head="fc"),
    # its ``GAPcnn``: plain conv blocks, global average pooling head
    "seed-gap": ModelSpec(hidden=8, batchnorm=False, dropout=0.0, head="gap"),
}


def _preset_factory(name: str, spec: ModelSpec) -> Factory:
    def factory(
        in_shape: tuple[int, int, int],
        num_classes: int,
        *,
        hidden: int = spec.hidden,
        blocks: int = spec.blocks,
        batchnorm: bool = spec.batchnorm,
        dropout: float = spec.dropout,
        head: str = spec.head,
        fc_width: int = spec.fc_width,
        dropout_impl: str = "torch",
    ) -> CNN:
        options = ModelSpec(hidden, blocks, batchnorm, dropout, head, fc_width)
        return build_cnn(options, tuple(in_shape), num_classes, dropout_impl)  # type: ignore[arg-type]

    factory.__name__ = factory.__qualname__ = name.replace("-", "_")
    factory.__doc__ = f"The tutorial's CNN family with the {name} preset's options as defaults."
    return factory


def model_spec(name: str, **overrides: Any) -> ModelSpec:
    """The preset's spec with the overrides that are not None (timm's create_model rule)."""
    if name not in PRESETS:
        raise OverfitlabError(f"unknown model {name!r}: choose one of {', '.join(PRESETS)}")
    given = {k: v for k, v in overrides.items() if v is not None}
    return replace(PRESETS[name], **given)


class CNN(nn.Module):
    """``features`` → [``gap``] → flatten → ``classifier``, as the tutorial writes it."""

    def __init__(self, features: nn.Sequential, classifier: nn.Sequential, gap: bool):
        super().__init__()
        self.features = features
        if gap:
            self.gap = nn.AdaptiveAvgPool2d(output_size=(1, 1))
        self.classifier = classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in pool_before_relu(self.features):
            x = layer(x)
        if hasattr(self, "gap"):
            x = self.gap(x)
        # flatten(1) rather than an nn.Flatten module keeps the tutorial's layer list.
        logits: torch.Tensor = self.classifier(x.flatten(1))  # (Module calls are typed Any)
        return logits


def pool_before_relu(layers: nn.Sequential) -> list[nn.Module]:
    """The layers in the order to run them: each ReLU directly followed by a max-pool
    runs after it.

    Max-pooling commutes with any non-decreasing function, so the outputs are the
    same, bit for bit, and so are the gradients (each window's maximum is the same
    element, and the ReLU passes or blocks it alike); the ReLU and its backward then
    touch a quarter of the elements: a 10-20 % shorter step for the seed-gap preset
    on CPU. Where a hook observes either layer (torchinfo's summary does), the
    layers run as written, so the hook sees the shapes the model declares.
    """
    order = list(layers)
    for i in range(len(order) - 1):
        relu, pool = order[i], order[i + 1]
        if (
            type(relu) is nn.ReLU
            and type(pool) is nn.MaxPool2d
            and not pool.return_indices
            and not _observed(relu)
            and not _observed(pool)
        ):
            order[i], order[i + 1] = pool, relu
    return order


def _observed(module: nn.Module) -> bool:
    """Whether any forward hook would see this module's call (its own or global ones)."""
    return bool(
        module._forward_hooks
        or module._forward_pre_hooks
        or module_impl._global_forward_hooks
        or module_impl._global_forward_pre_hooks
    )


def _dropout(p: float, impl: str) -> nn.Module:
    return FastDropout(p) if impl == "fast" else nn.Dropout(p)


def build_cnn(
    spec: ModelSpec, in_shape: tuple[int, int, int], classes: int, dropout_impl: str = "torch"
) -> CNN:
    """Build the CNN for images of shape (C, H, W)."""
    channels, height, width = in_shape
    if spec.blocks < 1 or spec.hidden < 1:
        raise OverfitlabError("hidden and blocks must be ≥ 1")
    if min(height, width) < 2**spec.blocks:
        raise OverfitlabError(
            f"{spec.blocks} pooling blocks need images of at least {2**spec.blocks}px, "
            f"got {height}×{width}: use fewer --blocks"
        )
    layers: list[nn.Module] = []
    width_in = channels
    for block in range(spec.blocks):
        width_out = spec.hidden * 2**block
        layers.append(nn.Conv2d(width_in, width_out, kernel_size=3, stride=1, padding=1))
        if spec.batchnorm:
            layers.append(nn.BatchNorm2d(width_out))
        layers.append(nn.ReLU())
        if spec.dropout > 0:
            layers.append(_dropout(spec.dropout, dropout_impl))
        layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        width_in = width_out
        height, width = height // 2, width // 2
    head_inputs = width_in if spec.head == "gap" else width_in * height * width
    classifier = nn.Sequential(
        nn.Linear(head_inputs, spec.fc_width),
        nn.ReLU(),
        nn.Linear(spec.fc_width, classes),
    )
    return CNN(nn.Sequential(*layers), classifier, gap=spec.head == "gap")


for _name, _spec in PRESETS.items():
    register_model(_name)(_preset_factory(_name, _spec))
