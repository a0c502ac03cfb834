"""Fine-tuning's training side: which body blocks are frozen at each epoch, and the optimizer's
parameter groups with discriminative learning rates.

The schedule (``frozen_blocks``) is fastai's and ULMFiT's: ``--freeze`` trains the head alone
for the whole run (Keras's ``trainable = False`` on the base); ``--freeze-epochs F`` trains the
head alone for F epochs and then everything (fastai's ``fine_tune(freeze_epochs=F)``);
``--unfreeze-every N`` frees one more block every N epochs after those, from the head down
(ULMFiT's gradual unfreezing; with no ``--freeze-epochs``, the head trains alone for N first).
Batch norm layers of a frozen block keep adapting their statistics to the new images, as in
fastai (``train_bn=True``): only the weights are fixed.

Frozen parameters stay in the optimizer with no gradient, which every torch optimizer skips
(no step, no decay), so unfreezing needs no new optimizer and a resumed run finds the same
groups.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from .callbacks import Callback, Fit
from .regularizers import is_penalized


def head_only_epochs(freeze_epochs: int, every: int) -> int:
    """The epochs the head trains alone before the body starts to thaw (0: none)."""
    return freeze_epochs or every


def frozen_blocks(epoch: int, blocks: int, freeze: bool, freeze_epochs: int, every: int) -> int:
    """How many body blocks, counted from the input, are frozen during ``epoch`` (1-based)."""
    if freeze:
        return blocks
    head_only = head_only_epochs(freeze_epochs, every)
    if epoch <= head_only:
        return blocks
    if every:
        return max(blocks - 1 - (epoch - head_only - 1) // every, 0)
    return 0


class Unfreezing(Callback):
    """Sets ``requires_grad`` of each body block at the start of every epoch, as the schedule says.
    ``blocks``: (name, parameters) of each, input first (``models.parts.Block``)."""

    def __init__(
        self,
        blocks: Sequence[tuple[str, Sequence[nn.Parameter]]],
        freeze: bool,
        freeze_epochs: int,
        every: int,
    ):
        self.names = [name for name, _ in blocks]
        self.blocks = [tuple(params) for _, params in blocks]
        self.freeze = freeze
        self.freeze_epochs = freeze_epochs
        self.every = every
        self.frozen_ = 0  # blocks frozen in the epoch under way

    def note(self) -> str:
        """The schedule in words, for the run's summary."""
        if self.freeze:
            return f"body frozen ({len(self.blocks)} blocks): the head alone trains"
        head_only = head_only_epochs(self.freeze_epochs, self.every)
        then = (
            f"then one more block every {self.every} epochs, {self.names[-1]} first"
            if self.every
            else "then everything"
        )
        return f"head alone for {head_only} epoch{'s' if head_only > 1 else ''}, {then}"

    def apply(self, epoch: int) -> None:
        self.frozen_ = frozen_blocks(epoch, len(self.blocks), self.freeze, self.freeze_epochs, self.every)
        for k, block in enumerate(self.blocks):
            for param in block:
                param.requires_grad_(k >= self.frozen_)

    def on_fit_start(self, trainer: Fit) -> None:
        self.apply(trainer.epoch + 1)  # a resumed run: the schedule at the epoch it goes on with

    def on_epoch_start(self, trainer: Fit, epoch: int) -> None:
        self.apply(epoch)


def block_rates(lr: float, ratio: float, blocks: int) -> list[float]:
    """Discriminative rates, input block first: lr·ratio for the first, geometrically up toward
    lr (the head's), as fastai's ``slice(lr * ratio, lr)`` spreads them over its layer groups."""
    return [lr * ratio ** ((blocks - k) / blocks) for k in range(blocks)]


def layer_groups(
    head: Sequence[nn.Parameter],
    blocks: Sequence[tuple[str, Sequence[nn.Parameter]]],
    lr: float,
    ratio: float,
    weight_decay: float,
    include_all: bool = False,
) -> list[dict[str, Any]]:
    """Optimizer groups, the head first (its lr is the run's, which the history records), then
    the body's blocks from the head down, each split into decayed weights and the rest as
    ``regularizers.param_groups`` splits them; ``name`` says which, for the summary."""
    rates = block_rates(lr, ratio, len(blocks))
    parts = [("head", tuple(head), lr)] + [
        (name, tuple(params), rate)
        for (name, params), rate in reversed(list(zip(blocks, rates, strict=True)))
    ]
    groups: list[dict[str, Any]] = []
    for name, params, rate in parts:
        decay = [p for p in params if is_penalized(p, include_all)]
        rest = [p for p in params if not is_penalized(p, include_all)]
        for kind, members, wd in (("", decay, weight_decay), (" (no decay)", rest, 0.0)):
            if members:
                groups.append({"params": members, "weight_decay": wd, "lr": rate, "name": name + kind})
    return groups


def group_notes(groups: Sequence[dict[str, Any]]) -> str:
    """The groups' learning rates and sizes, head first: ``head 0.01 (505), features 0.001 (1,296)``."""
    sizes: dict[str, int] = {}
    rates: dict[str, float] = {}
    for group in groups:
        name = group["name"].removesuffix(" (no decay)")
        sizes[name] = sizes.get(name, 0) + sum(p.numel() for p in group["params"])
        rates[name] = group["lr"]
    listed = ", ".join(f"{name} {rates[name]:.3g} ({sizes[name]:,})" for name in sizes)
    return f"learning rates (parameters): {listed}"


def l2_sp_penalty(anchors: Sequence[tuple[torch.Tensor, torch.Tensor]], lam: float) -> torch.Tensor:
    """λ Σ(w − w₀)² over the trainable ones of (w, w₀); its gradient is 2λ(w − w₀)."""
    terms = [(w - start).pow(2).sum() for w, start in anchors if w.requires_grad]
    return lam * torch.stack(terms).sum() if terms else torch.zeros(())
