"""Progress displays, terminal and notebook alike, drawn by tqdm.

``EpochProgress`` is a callback: one bar per epoch over its batches, then one line
with the epoch's numbers. In a notebook with ipywidgets the bar is a widget; without
ipywidgets (where ``tqdm.auto`` fails) it is tqdm's plain text bar. Redraws are
throttled (``mininterval``): 0.1 s in a terminal, 1 s in a notebook, where bars
that redraw too often freeze the page.
"""

from __future__ import annotations

import importlib.util
import math
import sys
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TextIO

from .callbacks import Callback, Fit

if TYPE_CHECKING:
    import torch


def in_notebook() -> bool:
    """True inside a Jupyter kernel (Jupyter, Colab, VS Code), not in a terminal IPython."""
    shell = sys.modules.get("IPython")
    if shell is None:
        return False
    ipython = shell.get_ipython()
    return ipython is not None and getattr(ipython, "kernel", None) is not None


def has_widgets() -> bool:
    """Whether ipywidgets is installed (tqdm's notebook bar fails without it)."""
    return importlib.util.find_spec("ipywidgets") is not None


def tqdm_class() -> Any:
    """tqdm's notebook widget where it works, else its text bar."""
    if in_notebook() and has_widgets():
        from tqdm.notebook import tqdm

        return tqdm
    from tqdm import tqdm

    return tqdm


class EpochProgress(Callback):
    """A bar per epoch over its batches on ``stream`` (stderr), then the epoch's line."""

    def __init__(self, epochs: int, stream: TextIO | None = None) -> None:
        self.epochs = epochs
        self.stream = stream or sys.stderr
        self._bar: Any = None
        notebook = in_notebook()
        self._tqdm = tqdm_class()
        self._interval = 1.0 if notebook else 0.1
        self._shown = -math.inf

    def on_epoch_start(self, trainer: Fit, epoch: int) -> None:
        self._bar = self._tqdm(
            total=None,
            desc=f"epoch {epoch}/{self.epochs}",
            unit="batch",
            file=self.stream,
            mininterval=self._interval,
            leave=False,
            dynamic_ncols=True,
        )

    def on_batch_end(self, trainer: Fit, batch: int, loss: torch.Tensor) -> None:
        bar = self._bar
        if bar is None:
            return
        if bar.total is None and trainer.batches_per_epoch:
            # Known once the epoch has begun (the trainer counts its batches then).
            bar.total = trainer.batches_per_epoch
            bar.update(1)
            bar.refresh()
        else:
            bar.update(1)
        # The loss costs a host sync: read it at most as often as the bar redraws.
        now = time.monotonic()
        if now - self._shown >= self._interval:
            self._shown = now
            bar.set_postfix(loss=f"{loss.item():.4f}", refresh=False)

    def on_epoch_end(self, trainer: Fit, epoch: int, metrics: Mapping[str, float]) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        line = (
            f"epoch {epoch}/{self.epochs}  train loss {metrics['train_loss']:.4f} "
            f"acc {metrics['train_acc']:.4f} | valid loss {metrics['valid_loss']:.4f} "
            f"acc {metrics['valid_acc']:.4f}  ({metrics['epoch_seconds']:.1f}s)"
        )
        self._tqdm.write(line, file=self.stream)

    def on_teardown(self, trainer: Fit) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
