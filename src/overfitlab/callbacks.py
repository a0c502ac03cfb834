"""Callbacks observe training; the trainer fits.

Every hook is a no-op so a callback overrides only what it needs. A callback
that wants training to end sets ``trainer.should_stop = True``; nothing is
raised.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the trainer imports this module; torch is imported with it
    import torch

    from .trainer import Trainer


class Callback:
    """Base class: all hooks do nothing."""

    def on_fit_start(self, trainer: Trainer) -> None:
        pass

    def on_epoch_start(self, trainer: Trainer, epoch: int) -> None:
        pass

    def on_batch_end(self, trainer: Trainer, batch: int, loss: torch.Tensor) -> None:
        """``loss`` is the batch's loss tensor: call ``.item()`` only when needed (it syncs)."""
        pass

    def on_epoch_end(self, trainer: Trainer, epoch: int, metrics: Mapping[str, float]) -> None:
        pass

    def on_fit_end(self, trainer: Trainer) -> None:
        """Training finished: every epoch ran, or a callback stopped it."""
        pass

    def on_teardown(self, trainer: Trainer) -> None:
        """Whenever ``fit`` returns or raises (Ctrl-C, divergence, an error), after
        ``on_fit_end`` when that ran: release what ``on_fit_start`` opened."""
        pass

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        pass
