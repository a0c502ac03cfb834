"""Callbacks observe training; the trainer fits.

Every hook is a no-op so a callback overrides only what it needs. A callback
that wants training to end sets ``trainer.should_stop = True``; nothing is
raised.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:  # only types: a callback module needs no torch to be imported
    import torch
    from torch import nn

    from ..history import History


class Fit(Protocol):
    """What a callback sees of the training it observes: ``Trainer`` has all of it, and a
    callback knows nothing else of the loop (skorch's callbacks, not Keras's ``self.model``).
    A callback ends training by setting ``should_stop``; everything else it only reads."""

    should_stop: bool

    @property
    def model(self) -> nn.Module: ...
    @property
    def optimizer(self) -> torch.optim.Optimizer: ...
    @property
    def generator(self) -> torch.Generator: ...
    @property
    def history(self) -> History: ...
    @property
    def epoch(self) -> int: ...  # epochs completed
    @property
    def batches_per_epoch(self) -> int: ...
    @property
    def callbacks(self) -> Sequence[Callback]: ...


class Callback:
    """Base class: all hooks do nothing."""

    def on_fit_start(self, trainer: Fit) -> None:
        pass

    def on_epoch_start(self, trainer: Fit, epoch: int) -> None:
        pass

    def on_batch_end(self, trainer: Fit, batch: int, loss: torch.Tensor) -> None:
        """``loss`` is the batch's loss tensor: call ``.item()`` only when needed (it syncs)."""
        pass

    def on_epoch_end(self, trainer: Fit, epoch: int, metrics: Mapping[str, float]) -> None:
        pass

    def on_fit_end(self, trainer: Fit) -> None:
        """Training finished: every epoch ran, or a callback stopped it."""
        pass

    def on_teardown(self, trainer: Fit) -> None:
        """Whenever ``fit`` returns or raises (Ctrl-C, divergence, an error), after
        ``on_fit_end`` when that ran: release what ``on_fit_start`` opened."""
        pass

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        pass
