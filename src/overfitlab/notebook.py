"""overfitlab in Jupyter: live learning curves in one output, rich displays of results.

``LiveCurves`` draws ``curves.png``'s picture (train dashed, valid solid, the gap
shaded, the best epoch marked) into one output area and redraws it in place
through a display handle (``display(..., display_id=True)``, then
``handle.update``), never with ``clear_output``, which would wipe the cell's other
output. It redraws at most once every ``every`` seconds and always when fit ends,
so the cell ends on the final picture. Outside a notebook it draws nothing.

The ``*_html`` functions are the ``_repr_html_`` of a run's result, a study's result
and a model summary: a compact table of the numbers that matter (every string
escaped) and a small picture.
"""

from __future__ import annotations

import base64
import html
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .callbacks import Callback
from .metrics import LABELS, SHORT_LABELS
from .progress import in_notebook

if TYPE_CHECKING:
    from .history import History
    from .run import RunResult
    from .study import StudyResult
    from .summary import ModelSummary
    from .trainer import Trainer

LIVE_EVERY_SECONDS = 1.0  # redraws at most this often: a redraw costs ~50 ms of PNG


def _best_and_stop(trainer: Trainer) -> tuple[int | None, int | None]:
    """The best and stop epochs as the run will report them: early stopping's, else the
    epoch of the lowest valid loss."""
    from .early_stopping import EarlyStopping

    for callback in trainer.callbacks:
        if isinstance(callback, EarlyStopping) and callback.best_epoch is not None:
            return callback.best_epoch, callback.stopped_epoch
    losses = [(e["valid_loss"], e["epoch"]) for e in trainer.history.epochs if math.isfinite(e["valid_loss"])]
    return (min(losses)[1] if losses else None), None


class LiveCurves(Callback):
    """Learning curves redrawn in place in a notebook while a model trains."""

    def __init__(self, every: float = LIVE_EVERY_SECONDS, title: str = "") -> None:
        self.every = every
        self.title = title
        self.handle: Any = None  # the DisplayHandle, once the first picture is shown
        self.draws = 0
        self._drawn_at = -math.inf
        self._enabled = in_notebook()

    def on_fit_start(self, trainer: Trainer) -> None:
        self.handle = None  # a new fit, a new picture (a second fit keeps the first's)

    def on_epoch_end(self, trainer: Trainer, epoch: int, metrics: Mapping[str, float]) -> None:
        if time.monotonic() - self._drawn_at >= self.every:
            self.draw(trainer)

    def on_teardown(self, trainer: Trainer) -> None:
        self.draw(trainer)  # the last picture is the final one, whatever was throttled or raised

    def draw(self, trainer: Trainer) -> None:
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
    from .plots import curves_figure, figure_png

    return figure_png(curves_figure(history, best_epoch, stopped_epoch, title))


# --------------------------------------------------------------------------- rich displays
def _text(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _table(rows: Iterable[tuple[str, Any]]) -> str:
    body = "".join(
        f"<tr><th style='text-align:left;padding-right:1em'>{html.escape(label)}</th>"
        f"<td style='text-align:right'>{html.escape(_text(value))}</td></tr>"
        for label, value in rows
    )
    return f"<table>{body}</table>"


def _image(png: bytes, alt: str, width: int = 520) -> str:
    data = base64.b64encode(png).decode("ascii")
    style = "max-width:100%"
    return (
        f"<img alt='{html.escape(alt)}' width='{width}' style='{style}' src='data:image/png;base64,{data}'>"
    )


def _box(title: str, *parts: str) -> str:
    return (
        "<div class='overfitlab' style='display:flex;flex-wrap:wrap;gap:1em;align-items:flex-start'>"
        f"<div><strong>{html.escape(title)}</strong>{parts[0]}</div>"
        + "".join(f"<div>{part}</div>" for part in parts[1:])
        + "</div>"
    )


def run_html(result: RunResult) -> str:
    summary = result.summary()
    rows: list[tuple[str, Any]] = []
    if result.data is not None:
        shape = "×".join(map(str, result.data.input_shape))
        rows.append(("data set", f"{result.data.dataset} ({result.data.train_images:,} train, {shape})"))
    rows += [("epochs run", summary["epochs_run"])]
    rows += [(LABELS[k], summary.get(k)) for k in ("best_epoch", "final_epoch", "final_valid_acc")]
    rows += [(LABELS[k], summary.get(k)) for k in ("final_gap_acc", "peak_valid_acc")]
    rows += [("stop reason", result.stop_reason), ("parameters", result.params)]
    if result.run_dir is not None:
        rows.append(("run folder", str(result.run_dir)))
    parts = [_table(rows)]
    if len(result.history):
        png = curves_png(result.history, result.best_epoch, result.stopped_epoch)
        parts.append(_image(png, "learning curves"))
    return _box("run", *parts)


def study_html(result: StudyResult) -> str:
    from .study import TABLE_METRICS

    head = "".join(
        f"<th>{html.escape(h)}</th>" for h in ["variant", "n", *[SHORT_LABELS[m] for m in TABLE_METRICS]]
    )

    def cell(stat: Mapping[str, Any]) -> str:
        if stat["mean"] is None:
            return "–"
        return f"{stat['mean']:.4f}" + ("" if stat["std"] is None else f" ± {stat['std']:.4f}")

    body = "".join(
        "<tr>"
        + f"<th style='text-align:left'>{html.escape(_variant(e))}</th><td>{e['n']}</td>"
        + "".join(f"<td>{html.escape(cell(e[m]))}</td>" for m in TABLE_METRICS)
        + "</tr>"
        for e in result.table
    )
    note = (
        f"<p>{len(result.runs)} runs, {result.wall_seconds:.1f} s, "
        f"{len(result.failed)} not complete · {html.escape(str(result.study_dir))}</p>"
    )
    parts = [f"<table><tr>{head}</tr>{body}</table>{note}"]
    png = study_curves_png(result.runs)
    if png is not None:
        parts.append(_image(png, "validation accuracy of every variant"))
    return _box(f"study {result.name}", *parts)


def _variant(entry: Mapping[str, Any]) -> str:
    grid = entry.get("grid_value")
    return str(entry["variant"]) + ("" if grid is None else f" @ {grid}")


def study_curves_png(rows: Sequence[Mapping[str, Any]]) -> bytes | None:
    """Every variant's mean validation accuracy against epochs, on one pair of axes."""
    from .history import History
    from .plots import figure_png, integer_epochs, new_figure
    from .stats import mean_curve

    histories: dict[str, list[History]] = {}
    for row in rows:
        path = Path(row.get("run_dir") or "") / "history.json"
        if row.get("status") == "complete" and path.is_file():
            label = _variant(row)
            histories.setdefault(label, []).append(History.from_json(path.read_text(encoding="utf-8")))
    if not histories:
        return None
    fig, ax = new_figure(figsize=(6, 3.6))
    for number, (label, runs) in enumerate(histories.items()):
        curve = mean_curve(runs, "valid_acc")
        ax.plot(
            curve.epochs,
            curve.mean,
            # The first variant is the baseline: black and thicker; ten colours for the rest.
            color="black" if number == 0 else f"C{(number - 1) % 10}",
            linewidth=2 if number == 0 else 1,
            label=label,
        )
    ax.set_xlabel("epoch")
    ax.set_ylabel("valid accuracy (mean over seeds)")
    integer_epochs(ax)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncols=2)
    return figure_png(fig)


def summary_html(summary: ModelSummary) -> str:
    head = "<tr><th>layer</th><th>output shape</th><th>parameters</th></tr>"
    body = "".join(
        f"<tr><td>{html.escape(layer.kind)}-{number}</td>"
        f"<td>{html.escape(str(list(layer.output_shape[1:])))}</td><td>{layer.params:,}</td></tr>"
        for number, layer in enumerate(summary.layers, start=1)
    )
    shape = "×".join(map(str, summary.input_shape))
    totals = _table(
        [
            ("input", shape),
            ("total params", summary.total_params),
            ("trainable params", summary.trainable_params),
            ("mult-adds", summary.mult_adds),
            ("estimated size (MB)", round(summary.total_mb, 2)),
        ]
    )
    return _box(summary.name or "model", totals, f"<table>{head}{body}</table>")


class StudyProgress:
    """A study's progress in one output area, updated in place: runs done of total, and per
    variant. Called as ``progress(row, done, total)`` as each run ends (``run_study``)."""

    def __init__(self, variants: Sequence[str], every: float = LIVE_EVERY_SECONDS) -> None:
        self.totals: dict[str, int] = {}
        for variant in variants:
            self.totals[variant] = self.totals.get(variant, 0) + 1
        self.done: dict[str, int] = dict.fromkeys(self.totals, 0)
        self.failed = 0
        self.every = every
        self.handle: Any = None
        self._drawn_at = -math.inf
        self._started = time.monotonic()

    def __call__(self, row: Mapping[str, Any], done: int, total: int) -> None:
        variant = str(row.get("variant"))
        self.done[variant] = self.done.get(variant, 0) + 1
        self.failed += row.get("status") != "complete"
        if done == total or time.monotonic() - self._drawn_at >= self.every:
            self.draw(done, total)

    def html(self, done: int, total: int) -> str:
        seconds = time.monotonic() - self._started
        left = seconds / done * (total - done) if done else math.nan
        eta = "" if not math.isfinite(left) or done == total else f", about {left:.0f} s left"
        rows = "".join(
            f"<tr><th style='text-align:left'>{html.escape(v)}</th><td>{self.done.get(v, 0)} / {n}</td></tr>"
            for v, n in self.totals.items()
        )
        failed = f", {self.failed} not complete" if self.failed else ""
        return (
            f"<div class='overfitlab'><strong>study: {done} / {total} runs</strong> "
            f"({seconds:.0f} s{eta}{failed})<table>{rows}</table></div>"
        )

    def draw(self, done: int, total: int) -> None:
        from IPython.display import HTML, display

        page = HTML(self.html(done, total))
        if self.handle is None:
            self.handle = display(page, display_id=True)
        else:
            self.handle.update(page)
        self._drawn_at = time.monotonic()
