"""TensorBoard logs of a run: each epoch's metrics, for `tensorboard --logdir runs/`.

Optional: ``pip install 'overfitlab[tensorboard]'``. The run folder's
history.json stays the record; these logs are a view of it.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import OverfitlabError
from .callbacks import Callback

if TYPE_CHECKING:  # torch imports the tensorboard package only when this module is used
    from torch.utils.tensorboard import SummaryWriter

TENSORBOARD_MISSING = "--tensorboard needs TensorBoard: pip install 'overfitlab[tensorboard]'"

# history column → TensorBoard tag; train and valid share a chart through the tag prefix.
TAGS = {
    "train_loss": "loss/train",
    "valid_loss": "loss/valid",
    "train_acc": "accuracy/train",
    "valid_acc": "accuracy/valid",
    "gap_acc": "gap/accuracy (train - valid)",
    "gap_loss": "gap/loss (valid - train)",
    "train_penalty": "penalty/train",
    "lr": "optim/lr",
    "epoch_seconds": "time/epoch_seconds",
}


def require_tensorboard() -> type[SummaryWriter]:
    """The SummaryWriter class, or a one-line error saying how to install it."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # torch imports the tensorboard package lazily, here
        raise OverfitlabError(TENSORBOARD_MISSING) from None
    return SummaryWriter


class TensorBoardLogger(Callback):
    """Writes every epoch's metrics (step = epoch) to ``log_dir``, flushed each epoch."""

    def __init__(self, log_dir: str | os.PathLike[str]):
        self.log_dir = Path(log_dir)
        self._writer_class = require_tensorboard()
        self.writer_: SummaryWriter | None = None

    def on_fit_start(self, trainer: Any) -> None:
        if self.writer_ is None:
            self.writer_ = self._writer_class(log_dir=str(self.log_dir))

    def on_epoch_end(self, trainer: Any, epoch: int, metrics: Mapping[str, float]) -> None:
        writer = self.writer_
        assert writer is not None  # opened by on_fit_start, closed by on_teardown
        for column, tag in TAGS.items():
            value = metrics.get(column)
            if isinstance(value, (int, float)) and math.isfinite(value):
                writer.add_scalar(tag, value, global_step=epoch)
        # Flushed now: a run killed later still leaves its epochs readable.
        writer.flush()

    def on_teardown(self, trainer: Any) -> None:
        self.close()

    def close(self) -> None:
        if self.writer_ is not None:
            self.writer_.close()
            self.writer_ = None
