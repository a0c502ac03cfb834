"""Learning curves averaged over seeds: mean and t-interval per epoch."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from .history import History
from .stats import GroupKey, Row, completed, group_runs


@dataclass(frozen=True)
class Curve:
    """A history column averaged over seeds, epoch by epoch.

    Runs that stopped early drop out: at each epoch the mean is over the runs
    still training then, and ``n`` says how many those are.
    """

    epochs: np.ndarray
    mean: np.ndarray
    std: np.ndarray  # NaN where fewer than two runs remain
    n: np.ndarray


def mean_curve(histories: Sequence[History], column: str) -> Curve:
    by_epoch: dict[int, list[float]] = {}
    for history in histories:
        for record in history.epochs:
            value = record.get(column)
            if isinstance(value, (int, float)) and math.isfinite(value):
                by_epoch.setdefault(int(record["epoch"]), []).append(float(value))
    epochs = sorted(by_epoch)
    means, stds, counts = [], [], []
    for epoch in epochs:
        values = np.asarray(by_epoch[epoch])
        means.append(values.mean())
        stds.append(values.std(ddof=1) if len(values) > 1 else math.nan)
        counts.append(len(values))
    return Curve(
        np.asarray(epochs, dtype=int),
        np.asarray(means, dtype=float),
        np.asarray(stds, dtype=float),
        np.asarray(counts, dtype=int),
    )


def curves_by_group(
    rows: Iterable[Row],
    histories: Mapping[str, History],
    columns: Sequence[str] = ("train_loss", "valid_loss", "train_acc", "valid_acc"),
) -> dict[GroupKey, dict[str, Curve]]:
    """Mean curves per (variant, grid value) over the completed runs that have a history."""
    out: dict[GroupKey, dict[str, Curve]] = {}
    for key, runs in group_runs(completed(rows)).items():
        found = [histories[r["run_id"]] for r in runs if r["run_id"] in histories]
        if found:
            out[key] = {column: mean_curve(found, column) for column in columns}
    return out
