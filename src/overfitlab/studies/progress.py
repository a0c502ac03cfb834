"""A study's progress: one bar per worker and one for the study, terminal and notebook alike."""

from __future__ import annotations

import html
import math
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    pass
from collections.abc import Callable
from typing import TYPE_CHECKING

from .. import store
from ..viz.html import REDRAW_SECONDS
from .spec import RunPlan

if TYPE_CHECKING:
    pass


class StudyProgress:
    """A study's progress in one output area, updated in place: runs done of total, and per
    variant. Called as ``progress(row, done, total)`` as each run ends (``run_study``)."""

    def __init__(self, variants: Sequence[str], every: float = REDRAW_SECONDS) -> None:
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


def _progress(
    progress: Callable[[dict[str, Any], int, int], None] | None,
    plans: Sequence[RunPlan],
    name: str,
    runs_dir: Path,
    live: bool,
    mlflow: bool | str,
) -> Callable[[dict[str, Any], int, int], None] | None:
    """Everything told as each run ends, in this process: the caller's ``progress``, the
    notebook's display, MLflow (one writer: the study, never its workers)."""
    calls = [progress] if progress is not None else []
    if live:
        # start-up: the training package imports torch
        from ..training.progress import in_notebook

        if in_notebook():
            calls.append(StudyProgress([p.variant for p in plans]))
    if mlflow:
        # optional: the mlflow extra
        from ..runs.tracking import Tracker

        tracker = Tracker.for_runs(runs_dir, mlflow if isinstance(mlflow, str) else None)
        parent = tracker.parent(name)

        def log(row: dict[str, Any], done: int, total: int) -> None:
            if row.get("run_dir") and (Path(row["run_dir"]) / store.SUMMARY_JSON).is_file():
                tags = {"study": name, "variant": row.get("variant"), "seed": row.get("seed")}
                if row.get("grid_value") is not None:
                    tags["grid_value"] = row["grid_value"]
                tracker.log_run(row["run_dir"], parent, tags)
            if done == total:
                tracker.end_parent(parent, complete=True)

        calls.append(log)
    if not calls:
        return None

    def every(row: dict[str, Any], done: int, total: int) -> None:
        for call in calls:
            call(row, done, total)

    return every
