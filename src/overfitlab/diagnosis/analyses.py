"""The diagnosis's pure statistics: severity, the learning curve's power law, noisy labels, the
remedy family."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from .. import stats
from ..history import History
from .results import GAP_BOUND, RISE_BOUND, Interval, NoisyLabels, Overfitting


def _last(history: History, column: str) -> float:
    return float(history.epochs[-1][column])


def grade(gaps: Sequence[float], rises: Sequence[float]) -> str:
    """none / mild / strong from one-sided 95 % bounds over seeds (the ends of two-sided 90 %
    intervals: the question is one-sided, "is it above the bound?"): the gap on its own scale,
    the rise (> 0) on the log scale."""
    gap = stats.describe(gaps, confidence=0.90)
    rise = stats.describe([max(r, 1e-6) for r in rises], confidence=0.90, scale="log")
    if gap.low > GAP_BOUND and rise.low > RISE_BOUND:
        return "strong"
    if gap.high < GAP_BOUND and rise.high < RISE_BOUND:
        return "none"
    return "mild"


def measure_overfitting(histories: Sequence[History]) -> Overfitting:
    """The baseline over seeds: gaps at the best and last epochs, where the valid loss turns."""
    gap_best, gap_last, turns, stays, rises = [], [], [], [], []
    losses = [np.array([e["valid_loss"] for e in h.epochs], dtype=float) for h in histories]
    length = min(len(v) for v in losses)
    # The seeds' noise: the std across seeds of the valid loss, averaged over epochs.
    noise = (
        float(np.nanmean(np.std(np.stack([v[:length] for v in losses]), axis=0, ddof=1)))
        if len(losses) > 1
        else 0.0
    )
    for history, loss in zip(histories, losses, strict=True):
        best = int(np.nanargmin(loss))
        record = history.epochs[best]
        gap_best.append(record["train_acc"] - record["valid_acc"])
        gap_last.append(_last(history, "train_acc") - _last(history, "valid_acc"))
        turns.append(float(best + 1))
        rises.append(float((loss[-1] - loss[best]) / loss[best]))
        above = loss > loss[best] + noise
        stay = next((i + 1 for i in range(best, len(loss)) if above[i:].all()), math.nan)
        stays.append(float(stay))
    last, rise = Interval.of(gap_last), Interval.of(rises, "log")
    severity = grade(gap_last, rises)
    return Overfitting(
        Interval.of([_last(h, "train_acc") for h in histories], "logit"),
        Interval.of([_last(h, "valid_acc") for h in histories], "logit"),
        Interval.of(gap_best),
        last,
        rise,
        Interval.of(turns, "log"),
        Interval.of(stays, "log"),
        severity,
    )


# --------------------------------------------------------------------------- part 2
def power_law(n: np.ndarray, a: float, b: float, c: float) -> np.ndarray:
    """err(n) = a·n^(−b) + c."""
    out: np.ndarray = a * np.power(n, -b) + c
    return out


def fit_power_law(
    sizes: Sequence[float], errors: Sequence[float], start: Sequence[float] | None = None
) -> dict[str, float] | None:
    """Least-squares a, b, c (a ≥ 0, 0 ≤ b ≤ 3, 0 ≤ c ≤ 1) and R²; None when it does not fit."""
    import warnings

    from scipy.optimize import OptimizeWarning, curve_fit

    x, y = np.asarray(sizes, dtype=float), np.asarray(errors, dtype=float)
    if len(x) < 3 or not np.isfinite(y).all():
        return None
    if start is None:
        start = (max(float(y[0] - y[-1]), 1e-3) * float(x[0]) ** 0.5, 0.5, max(float(y.min()) * 0.5, 0.0))
    try:
        with warnings.catch_warnings():  # three points and three parameters: no covariance, no matter
            warnings.simplefilter("ignore", OptimizeWarning)
            (a, b, c), _ = curve_fit(
                power_law, x, y, p0=list(start), bounds=([0, 0, 0], [np.inf, 3, 1]), maxfev=20_000
            )
    except (RuntimeError, ValueError):
        return None
    residual = float(np.sum((y - power_law(x, a, b, c)) ** 2))
    total = float(np.sum((y - y.mean()) ** 2))
    return {"a": float(a), "b": float(b), "c": float(c), "r2": 1 - residual / total if total > 0 else 1.0}


def noisy_labels(fraction: float, histories: Sequence[History]) -> NoisyLabels:
    best = [max(e["valid_acc"] for e in h.epochs) for h in histories]
    last = [_last(h, "valid_acc") for h in histories]
    return NoisyLabels(
        fraction,
        Interval.of(best, "logit"),
        Interval.of(last, "logit"),
        Interval.of([b - a for b, a in zip(best, last, strict=True)]),
    )


def remedy_family(variants: Sequence[str], left_out: Sequence[Mapping[str, str]]) -> list[str]:
    """The variants compared as one family for Holm's adjustment: the baseline and the remedies,
    not the sizes and noise levels (not remedies), nor the variants the model cannot take (never
    run: counting them would adjust for comparisons that were not made)."""
    never = {entry["variant"] for entry in left_out}
    return [v for v in variants if not v.startswith(("size-", "noise-")) and v not in never]
