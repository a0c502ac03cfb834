"""Pictures of over-fitting: learning curves with the gap shaded, best and stop epochs marked."""

from __future__ import annotations

import io
import os
from typing import TYPE_CHECKING, Any

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from ..history import History
from ..store import atomic_write

if TYPE_CHECKING:
    from matplotlib.axes import Axes

# Figures are made as matplotlib.figure.Figure, never through pyplot: nothing here selects a
# backend or registers a window, so importing overfitlab leaves a notebook's matplotlib as it
# was, and a figure is freed with its last reference (savefig renders PNG with Agg by itself).
__all__ = ["TRAIN_STYLE", "VALID_STYLE", "curves_figure", "figure_png", "new_figure", "plot_curves"]

TRAIN_STYLE = {"linestyle": "--", "color": "tab:blue", "label": "train"}
VALID_STYLE = {"linestyle": "-", "color": "tab:orange", "label": "valid"}


def figure_png(fig: Figure, dpi: int = 110, tight: bool = True) -> bytes:
    """The figure as PNG bytes; ``tight`` crops it to what is drawn."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight" if tight else None)
    return buffer.getvalue()


def new_figure(nrows: int = 1, ncols: int = 1, **subplots: Any) -> tuple[Figure, Any]:
    """``plt.subplots`` without pyplot: (figure, axes); ``figsize`` goes to the figure."""
    fig = Figure(figsize=subplots.pop("figsize", None))
    return fig, fig.subplots(nrows, ncols, **subplots)


def integer_epochs(ax: Axes) -> None:
    """Epoch ticks on whole numbers: a 4-epoch run gets 1 2 3 4, never 2.5."""
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _mark(ax: Axes, best_epoch: int | None, stopped_epoch: int | None) -> None:
    if best_epoch is not None:
        ax.axvline(best_epoch, color="tab:green", linewidth=1, label=f"best (epoch {best_epoch})")
    if stopped_epoch is not None:
        ax.axvline(
            stopped_epoch,
            color="tab:red",
            linewidth=1,
            linestyle=":",
            label=f"stopped (epoch {stopped_epoch})",
        )


def curves_figure(
    history: History, best_epoch: int | None = None, stopped_epoch: int | None = None, title: str = ""
) -> Figure:
    epochs = history.column("epoch")
    fig, (loss_ax, acc_ax) = new_figure(1, 2, figsize=(10, 3.8))
    for ax, metric, label in ((loss_ax, "loss", "cross-entropy loss"), (acc_ax, "acc", "accuracy")):
        train, valid = history.column(f"train_{metric}"), history.column(f"valid_{metric}")
        ax.plot(epochs, train, **TRAIN_STYLE)
        ax.plot(epochs, valid, **VALID_STYLE)
        # The shaded band is the generalization gap the remedies try to close.
        ax.fill_between(epochs, train, valid, color="tab:red", alpha=0.12, label="gap")
        _mark(ax, best_epoch, stopped_epoch)
        ax.set_xlabel("epoch")
        integer_epochs(ax)
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    loss_ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    return fig


def plot_curves(
    history: History,
    path: str | os.PathLike[str],
    best_epoch: int | None = None,
    stopped_epoch: int | None = None,
    title: str = "",
) -> None:
    atomic_write(path, figure_png(curves_figure(history, best_epoch, stopped_epoch, title)))
