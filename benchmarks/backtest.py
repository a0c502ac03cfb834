"""The learning-curve backtest: every family fitted where the diagnosis would fit it, judged
where the truth was measured (``python -m benchmarks.learning_curves --backtest``).

A case is a window of five consecutive grid sizes (a 4× range, as the standard budget's sizes),
the accuracies of five seeds at each (one of two disjoint halves of the ten measured), and a
target at 2× or 4× the window's largest size whose truth is the ten-seed mean measured there.
Each family predicts the target; its error is prediction − truth. The band's width in bootstrap
spreads (κ) is calibrated leaving one data set out: κ is the 95th percentile of |error| / spread
over the other data sets' cases, and the coverage is counted on the data set left out, so no
case judges a band calibrated on itself."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from overfitlab.diagnosis import extrapolation

WINDOW = 5  # sizes per fit: n/4 … n on the √2 grid
HALVES = ((0, 5), (5, 10))  # the seeds of each fit
RATIOS = {2: 2, 4: 4}  # target ratio → grid steps of √2 beyond the window (2× is 2 steps, 4× is 4)
RESAMPLES = 100
LEVEL = 0.95


@dataclass(frozen=True)
class Case:
    dataset: str
    sizes: tuple[int, ...]
    accuracies: tuple[tuple[float, ...], ...]
    ratio: int
    target: int
    truth: float  # ten-seed mean at the target


def cases(curve: dict) -> Iterator[Case]:
    """Every window, target and half of the seeds; runs that collapsed to chance left out of
    both the fit and the truth, as the diagnosis leaves them out."""
    chance = 1 / curve.get("classes", 10)
    sizes = curve["sizes"]
    acc = [
        [None if bad else a for a, bad in zip(v, extrapolation.collapsed(v, chance), strict=True)]
        for v in curve["valid_acc"]
    ]
    on_grid = [k for k in range(len(sizes)) if k == 0 or abs(sizes[k] / sizes[k - 1] - 2**0.5) < 0.02]
    grid = [sizes[k] for k in on_grid]
    for start in range(len(grid)):
        window = on_grid[start : start + WINDOW]
        if len(window) < WINDOW:
            break
        for ratio, steps in RATIOS.items():
            last = start + WINDOW - 1 + steps
            if last >= len(on_grid):
                continue
            target = on_grid[last]
            for a, b in HALVES:
                yield Case(
                    curve["dataset"],
                    tuple(sizes[k] for k in window),
                    tuple(tuple(x for x in acc[k][a:b] if x is not None) for k in window),
                    ratio,
                    sizes[target],
                    float(np.mean([x for x in acc[target] if x is not None])),
                )


@dataclass(frozen=True)
class Outcome:
    case: Case
    family: str
    error: float  # predicted − true accuracy; NaN where the family did not fit
    spread: float


def outcomes(
    all_cases: list[Case], families: tuple[str, ...] = extrapolation.FAMILIES, resamples: int = RESAMPLES
) -> list[Outcome]:
    out = []
    for case in all_cases:
        for family in families:
            p = extrapolation.predict(
                case.sizes, case.accuracies, case.target, family, resamples=resamples, width=0.0
            )
            if p is None:
                out.append(Outcome(case, family, math.nan, math.nan))
            else:
                out.append(Outcome(case, family, p.accuracy - case.truth, p.spread))
    return out


def calibrated(rows: list[Outcome], ratio: int, family: str) -> dict[str, float]:
    """κ fitted leaving each data set out, and the coverage and mean width on the one left out."""
    mine = [o for o in rows if o.family == family and o.case.ratio == ratio]
    datasets = sorted({o.case.dataset for o in mine})
    covered, widths, kappas = [], [], []
    for held in datasets:
        train = [o for o in mine if o.case.dataset != held and math.isfinite(o.error) and o.spread > 0]
        if not train:
            continue
        k = float(np.quantile([abs(o.error) / o.spread for o in train], LEVEL))
        kappas.append(k)
        for o in mine:
            if o.case.dataset == held and math.isfinite(o.error):
                covered.append(abs(o.error) <= k * o.spread)
                widths.append(2 * k * o.spread)
    every = [abs(o.error) / o.spread for o in mine if math.isfinite(o.error) and o.spread > 0]
    return {
        "coverage": float(np.mean(covered)) if covered else math.nan,
        "width": float(np.mean(widths)) if widths else math.nan,
        "kappa_all": float(np.quantile(every, LEVEL)) if every else math.nan,
        "kappa_range": (min(kappas), max(kappas)) if kappas else (math.nan, math.nan),
    }


def table(rows: list[Outcome]) -> list[dict]:
    out = []
    for family in dict.fromkeys(o.family for o in rows):
        for ratio in RATIOS:
            mine = [o for o in rows if o.family == family and o.case.ratio == ratio]
            errors = np.array([o.error for o in mine], dtype=float)
            fitted = errors[np.isfinite(errors)]
            per_set = {
                d: float(
                    np.mean(np.abs([o.error for o in mine if o.case.dataset == d and math.isfinite(o.error)]))
                )
                for d in sorted({o.case.dataset for o in mine})
            }
            out.append(
                {
                    "family": family,
                    "ratio": ratio,
                    "cases": len(mine),
                    "failed": int(len(errors) - len(fitted)),
                    "mae": float(np.mean(np.abs(fitted))) if len(fitted) else math.nan,
                    "bias": float(np.mean(fitted)) if len(fitted) else math.nan,
                    "mae_by_dataset": per_set,
                    **calibrated(rows, ratio, family),
                }
            )
    return out


def load(folder: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]


def main(folder: Path) -> list[dict]:
    curves = load(folder)
    all_cases = [c for curve in curves for c in cases(curve)]
    rows = table(outcomes(all_cases))
    datasets = ", ".join(f"{c['dataset']} ({len(c['sizes'])} sizes)" for c in curves)
    print(f"{len(all_cases)} cases from {datasets}; five seeds per fit, truth = ten-seed mean\n")
    header = (
        "| family | target | cases | failed | mean abs. error | by data set | bias "
        "| κ (leave one set out) | coverage of 95 % band | mean band width |"
    )
    print(header)
    print("| --- " * (header.count("|") - 1) + "|")
    for r in rows:
        by = ", ".join(f"{d} {v:.4f}" for d, v in r["mae_by_dataset"].items())
        low, high = r["kappa_range"]
        print(
            f"| {r['family']} | {r['ratio']}× | {r['cases']} | {r['failed']} | {r['mae']:.4f} | {by} | "
            f"{r['bias']:+.4f} | {low:.1f}-{high:.1f} (all: {r['kappa_all']:.1f}) | {r['coverage']:.2f} | "
            f"{r['width']:.4f} |"
        )
    return rows
