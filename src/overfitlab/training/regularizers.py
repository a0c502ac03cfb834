"""Weight penalties, weight-decay parameter groups and the max-norm constraint.

Three remedies that look alike and are not the same thing:

* **L2 in the loss** (``--l2 λ``): loss + λΣw². Its gradient 2λw goes through
  the optimizer. With plain SGD this is exactly SGD's ``weight_decay=2λ``; with
  Adam the penalty's gradient is divided by Adam's running RMS, so weights with
  large gradients are barely regularized.
* **Adam's weight_decay** (``--weight-decay λ --optimizer adam``): "coupled"
  decay, λw added to the gradient before Adam's scaling: the same as L2 in the
  loss with λ/2, so it shares that weakness.
* **AdamW** (``--weight-decay λ --optimizer adamw``): "decoupled" decay, the
  weights shrink by lr·λ·w each step after Adam's update, whatever the gradient
  scale (Loshchilov & Hutter, 2019).

By default penalties and decay apply to conv and linear weights only (tensors
of rank ≥ 2); biases and batch-norm scales/shifts are left alone, since shrinking
them limits no capacity and can hurt (the rule nanoGPT and timm use).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn


def is_decayed(param: torch.Tensor) -> bool:
    """Conv and linear weights (rank ≥ 2), not biases or norm parameters (rank 1)."""
    return param.dim() >= 2


def is_penalized(param: torch.Tensor, include_all: bool) -> bool:
    """Whether L1, L2, L2-SP and weight decay apply: decayed weights, or all with ``include_all``."""
    return include_all or is_decayed(param)


def penalized_parameters(model: nn.Module, include_all: bool = False) -> list[torch.Tensor]:
    return [p for p in model.parameters() if p.requires_grad and is_penalized(p, include_all)]


def tensor_sum(terms: Iterable[torch.Tensor]) -> torch.Tensor:
    """``sum(terms)``, added in the same order; a zero tensor when there are none (where
    ``sum`` would return the int 0)."""
    total = sum(terms)
    return total if isinstance(total, torch.Tensor) else torch.zeros(())


def l1_penalty(params: Iterable[torch.Tensor], lam: float) -> torch.Tensor:
    """λ Σ|w|; its gradient is λ·sign(w)."""
    return lam * tensor_sum(p.abs().sum() for p in params)


def l2_penalty(params: Iterable[torch.Tensor], lam: float) -> torch.Tensor:
    """λ Σw²; its gradient is 2λw."""
    return lam * tensor_sum(p.pow(2).sum() for p in params)


def param_groups(model: nn.Module, weight_decay: float, include_all: bool = False) -> list[dict[str, Any]]:
    """Optimizer groups: decayed weights, then the rest with weight_decay 0."""
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for param in model.parameters():
        if param.requires_grad:
            (decay if is_penalized(param, include_all) else no_decay).append(param)
    groups: list[dict[str, Any]] = [{"params": decay, "weight_decay": weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


@torch.no_grad()
def apply_max_norm(model: nn.Module, max_norm: float) -> None:
    """Rescale each unit's incoming weights to L2 norm ≤ max_norm (Keras MaxNorm, per output unit)."""
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            weight = module.weight
            norms = weight.flatten(1).norm(dim=1)
            # Units within the bound keep their weights bit for bit: C·(1/C) is not
            # always 1 in float32, so they are not rescaled at all.
            scale = torch.where(norms > max_norm, max_norm / norms, torch.ones_like(norms))
            weight.mul_(scale.view(-1, *([1] * (weight.dim() - 1))))
