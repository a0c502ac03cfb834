"""The diagnosis's pure statistics: severity, the learning curve over sizes, noisy labels, the
remedy family."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from .. import stats
from ..history import History
from . import extrapolation
from .results import GAP_BOUND, RISE_BOUND, Interval, LearningCurve, NoisyLabels, Overfitting


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
def sizes_above(recipe: int, available: int, most: int) -> list[int]:
    """The sizes part 2 measures above the recipe's: 2×, 4×, … up to ``most``×, while the data
    hold them; and every image there is, where that is within ``most``× but not on the way."""
    sizes, factor = [], 2
    while factor <= most and recipe * factor <= available:
        sizes.append(recipe * factor)
        factor *= 2
    if recipe < available <= recipe * most and available not in sizes:
        sizes.append(available)
    return sizes


def gain_band(prediction: extrapolation.Prediction, measured: float, seeds: int) -> Interval:
    """A predicted accuracy as the gain over a measured one, its band kept inside [−1, 1]."""
    return Interval(
        prediction.accuracy - measured,
        max(-1.0, prediction.low - measured),
        min(1.0, prediction.high - measured),
        seeds,
    )


def learning_curve(
    sizes: Sequence[int],
    valid_acc: Sequence[Mapping[int, float]],
    train_acc: Sequence[Mapping[int, float]],
    recipe_size: int,
    available: int,
    classes: int = 10,
    family: str = extrapolation.DEFAULT,
    seed: int = 0,
) -> LearningCurve:
    """Part 2 from the seeds' final accuracies per size (seed → accuracy).

    Above the recipe's size the gains are measured, paired over the seeds both sizes ran; the
    curve fitted to the recipe's sizes alone predicts them too, as a check in plain sight. The
    curve fitted to every size predicts 2× and 4× the largest: extrapolation, only beyond what
    was measured. Runs that collapsed to chance are left out of all of it, and named."""
    sizes = [int(s) for s in sizes]
    dropped = []
    kept_valid, kept_train = [], []
    for size, accs, trains in zip(sizes, valid_acc, train_acc, strict=True):
        bad = extrapolation.collapsed(list(accs.values()), 1 / classes)
        out = {s for s, b in zip(accs, bad, strict=True) if b}
        dropped += [(size, s) for s in sorted(out)]
        kept_valid.append({s: a for s, a in accs.items() if s not in out})
        kept_train.append({s: a for s, a in trains.items() if s not in out})
    valid_acc = kept_valid
    per_size = [list(v.values()) for v in valid_acc]
    recipe = {s: v for s, v in zip(sizes, valid_acc, strict=True)}[recipe_size]
    below = [k for k, s in enumerate(sizes) if s <= recipe_size]
    recipe_mean = float(np.mean(list(recipe.values())))
    above = [s for s in sizes if s > recipe_size]
    measured = [
        Interval.of([accs[s] - recipe[s] for s in sorted(set(accs) & set(recipe))])
        for size, accs in zip(sizes, valid_acc, strict=True)
        if size > recipe_size
    ]
    predicted_below = extrapolation.predictions(
        [sizes[k] for k in below], [per_size[k] for k in below], above, family, seed=seed
    )
    checks: list[Interval | None] = (
        [gain_band(p, recipe_mean, len(recipe)) for p in predicted_below]
        if predicted_below is not None
        else [None] * len(above)
    )
    warnings: list[str] = []
    if dropped:
        runs = ", ".join(f"seed {s} at {n:,}" for n, s in dropped)
        runs_are = f"{len(dropped)} runs collapsed" if len(dropped) > 1 else "1 run collapsed"
        warnings.append(
            f"{runs_are} to chance accuracy ({runs}) and {'are' if len(dropped) > 1 else 'is'} left out of "
            "the curve: that is the recipe's training failing, not the data"
        )
    warnings += [
        f"the {extrapolation.WORDS[family]} fitted to the recipe's sizes predicted {check.text()} at "
        f"{size:,} images, outside what was measured there ({gain.text()}): this data set's curve "
        "bends otherwise, so read the extrapolation with care"
        for size, gain, check in zip(above, measured, checks, strict=True)
        if check is not None and (check.high < gain.low or check.low > gain.high)
    ]
    fitted = extrapolation.fitted(family, sizes, per_size)
    seeds = min(len(v) for v in per_size)
    # The band at sizes spaced evenly in log n from the largest measured to 4× it (2× is the 5th).
    targets = [round(sizes[-1] * 2 ** (k / 4)) for k in range(1, 9)]
    band = extrapolation.predictions(sizes, per_size, targets, family, seed=seed)
    predicted: list[Interval] = []
    if fitted is None or band is None or any(not math.isfinite(p.low) for p in band):
        warnings.append(
            f"the {extrapolation.WORDS[family]} does not fit these points, or there are too few seeds"
        )
        targets = []
    else:
        last = float(np.mean(per_size[-1]))
        predicted = [gain_band(p, last, seeds) for p in band]
    return LearningCurve(
        tuple(sizes),
        tuple(Interval.of(list(v.values()), "logit") for v in kept_train),
        tuple(Interval.of(v, "logit") for v in per_size),
        recipe_size=recipe_size,
        available=available,
        measured=tuple(measured),
        checks=tuple(checks),
        family=family,
        params=fitted.params if fitted else (),
        predicted=tuple(predicted),
        predicted_sizes=tuple(targets),
        ceiling=extrapolation.asymptote(sizes, per_size, seed=seed),
        warnings=tuple(warnings),
    )


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
