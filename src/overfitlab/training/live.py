"""Live learning curves in a notebook: one output redrawn in place, throttled."""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..viz.html import REDRAW_SECONDS
from .callbacks import Callback, Fit
from .early_stopping import EarlyStopping
from .progress import in_notebook

if TYPE_CHECKING:
    from ..history import History


def _best_and_stop(trainer: Fit) -> tuple[int | None, int | None]:
    """The best and stop epochs as the run will report them: early stopping's, else the
    epoch of the lowest valid loss."""

    for callback in trainer.callbacks:
        if isinstance(callback, EarlyStopping) and callback.best_epoch is not None:
            return callback.best_epoch, callback.stopped_epoch
    losses = [(e["valid_loss"], e["epoch"]) for e in trainer.history.epochs if math.isfinite(e["valid_loss"])]
    return (min(losses)[1] if losses else None), None


class LiveCurves(Callback):
    """Learning curves redrawn in place in a notebook while a model trains."""

    def __init__(self, every: float = REDRAW_SECONDS, title: str = "") -> None:
        self.every = every
        self.title = title
        self.handle: Any = None  # the DisplayHandle, once the first picture is shown
        self.draws = 0
        self._drawn_at = -math.inf
        self._enabled = in_notebook()

    def on_fit_start(self, trainer: Fit) -> None:
        self.handle = None  # a new fit, a new picture (a second fit keeps the first's)

    def on_epoch_end(self, trainer: Fit, epoch: int, metrics: Mapping[str, float]) -> None:
        if time.monotonic() - self._drawn_at >= self.every:
            self.draw(trainer)

    def on_teardown(self, trainer: Fit) -> None:
        self.draw(trainer)  # the last picture is the final one, whatever was throttled or raised

    def draw(self, trainer: Fit) -> None:
        if not self._enabled or not len(trainer.history):
            return
        from IPython.display import Image, display

        image = Image(data=curves_png(trainer.history, *_best_and_stop(trainer), title=self.title))
        if self.handle is None:
            self.handle = display(image, display_id=True)
        else:
            self.handle.update(image)
        self.draws += 1
        self._drawn_at = time.monotonic()


def curves_png(
    history: History, best_epoch: int | None = None, stopped_epoch: int | None = None, title: str = ""
) -> bytes:
    # start-up: matplotlib only when a curve is drawn
    from ..viz.plots import curves_figure, figure_png

    return figure_png(curves_figure(history, best_epoch, stopped_epoch, title))
