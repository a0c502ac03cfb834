"""Callbacks observe training; the trainer fits.

Every hook is a no-op so a callback overrides only what it needs. A callback
that wants training to end sets ``trainer.should_stop = True``; nothing is
raised.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class Callback:
    """Base class: all hooks do nothing."""

    def on_fit_start(self, trainer: Any) -> None:
        pass

    def on_epoch_start(self, trainer: Any, epoch: int) -> None:
        pass

    def on_batch_end(self, trainer: Any, batch: int, loss: Any) -> None:
        """``loss`` is the batch's loss tensor: call ``.item()`` only when needed (it syncs)."""
        pass

    def on_epoch_end(self, trainer: Any, epoch: int, metrics: Mapping[str, float]) -> None:
        pass

    def on_fit_end(self, trainer: Any) -> None:
        pass

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        pass
