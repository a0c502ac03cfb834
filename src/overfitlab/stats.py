"""How sure are we? Means over seeds, 95% t-intervals, and remedies paired against the baseline.

Every function here takes plain run rows (dicts with the index's keys:
``variant``, ``seed``, ``grid_value``, ``status``, ``peak_valid_acc`` ...) or
Histories, and returns plain numbers: the report and the pictures only format
them.

Seeds are few (3 to 10), so intervals use Student's t, never the normal
approximation: with n = 3 the 97.5% quantile is 4.30, not 1.96. A remedy is
compared with the baseline run for run on the same seed (and grid value): the
seed fixes the data subset, the initial weights and the batch order, so the
paired differences cancel much of the seed-to-seed noise a two-sample test
would carry.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.special import stdtr, stdtrit

CONFIDENCE = 0.95
# Proportions at exactly 0 or 1 (a train accuracy of 1.0) have no logit: they are taken as
# this close to the bound, so an interval of a mean accuracy stays inside (0, 1).
EDGE = 1e-4

# Row metric -> what a person reads. ``stop_epoch`` is derived (see metric_value).
METRICS: dict[str, str] = {
    # The words of overfitlab.metrics (summary.txt, runs list): one meaning each.
    "peak_valid_acc": "peak valid accuracy (any epoch)",
    "lowest_valid_loss": "lowest valid loss (any epoch)",
    "final_gap_acc": "final gap, train − valid accuracy",
    "final_gap_loss": "final gap, valid − train loss",
    "final_train_acc": "final train accuracy",
    "final_valid_acc": "final valid accuracy (model returned)",
    "best_epoch": "best epoch",
    "stop_epoch": "stop epoch",
    "params": "parameters",
    "seconds": "wall time (s)",
}

# The accuracy gap: how much a model over-fits, shown beside the effect (it describes, never decides).
GAP_METRIC = "final_gap_acc"
# Differences shown next to the gap in the comparison table.
COMPARED = ("final_valid_acc", "final_gap_acc", "peak_valid_acc", "final_gap_loss", "lowest_valid_loss")
# A remedy is judged by the model a run returns: its valid accuracy (the headline), not the gap.
HEADLINE_METRIC = "final_valid_acc"

Row = Mapping[str, Any]


# --------------------------------------------------------------------------- one metric
def metric_value(row: Row, metric: str) -> float:
    """A run's value of ``metric`` as a float; NaN when missing (failed, diverged).

    ``stop_epoch`` is the epoch training ended: early stopping's epoch, or the
    last epoch trained when it ran to the end.
    """
    if metric == "stop_epoch":
        # Not final_epoch: with early stopping that is the restored best epoch.
        value = row.get("stopped_epoch")
        if value is None:
            value = row.get("epochs_run")
    else:
        value = row.get(metric)
    if value is None or isinstance(value, bool):
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _finite(values: Iterable[float]) -> np.ndarray:
    array = np.asarray([float(v) for v in values], dtype=float)
    finite: np.ndarray = array[np.isfinite(array)]
    return finite


def t_quantile(n: int, confidence: float = CONFIDENCE) -> float:
    """Two-sided Student t quantile for n observations (n − 1 degrees of freedom)."""
    return float(stdtrit(n - 1, 0.5 + confidence / 2))


@dataclass(frozen=True)
class Summary:
    """One metric over seeds: n, mean, sample std (ddof=1), an interval of the mean.

    With n < 2 the std and the interval are undefined (NaN), never zero. The interval is
    Student's t on the metric's scale (``SCALES``): for an accuracy the t-interval of the
    logits' mean, mapped back, so it stays inside (0, 1); for a count or a loss (> 0) that of
    the logarithms' mean, so it stays above 0; for the rest the plain t-interval.
    """

    n: int
    mean: float
    std: float
    low: float
    high: float


# How each metric's interval respects its range (see Summary).
SCALES: dict[str, str] = {
    "peak_valid_acc": "logit",
    "final_valid_acc": "logit",
    "final_train_acc": "logit",
    "final_test_acc": "logit",
    "lowest_valid_loss": "log",
    "best_epoch": "log",
    "stop_epoch": "log",
    "seconds": "log",
    "params": "log",
}


def _to_scale(x: np.ndarray, scale: str) -> np.ndarray:
    if scale == "logit":
        clipped = np.clip(x, EDGE, 1 - EDGE)
        out: np.ndarray = np.log(clipped / (1 - clipped))
        return out
    if scale == "log":
        logs: np.ndarray = np.log(np.maximum(x, EDGE))
        return logs
    return x


def _from_scale(y: float, scale: str) -> float:
    if scale == "logit":
        return 1 / (1 + math.exp(-y))
    if scale == "log":
        return math.exp(y)
    return y


def describe(values: Iterable[float], confidence: float = CONFIDENCE, scale: str = "linear") -> Summary:
    """mean and std of the finite values; the interval ȳ ± t_{(1+c)/2, n−1} · s_y/√n of
    y = the values on ``scale`` (linear, logit or log), mapped back."""
    x = _finite(values)
    n = len(x)
    if n == 0:
        return Summary(0, math.nan, math.nan, math.nan, math.nan)
    mean = float(x.mean())
    if n < 2:
        return Summary(1, mean, math.nan, math.nan, math.nan)
    std = float(x.std(ddof=1))
    y = _to_scale(x, scale)
    centre, spread = float(y.mean()), float(y.std(ddof=1))
    half = t_quantile(n, confidence) * spread / math.sqrt(n)
    low, high = _from_scale(centre - half, scale), _from_scale(centre + half, scale)
    return Summary(n, mean, std, min(low, mean), max(high, mean))


def holm(p_values: Sequence[float | None]) -> list[float | None]:
    """Holm–Bonferroni adjusted p-values, in the given order (None: no test, not counted).

    With m tests sorted p₍₁₎ ≤ … ≤ p₍ₘ₎, the adjusted p₍ᵢ₎ is max over j ≤ i of
    min(1, (m − j + 1)·p₍ⱼ₎): rejecting where it is below α keeps the chance of any false
    "beyond seed noise" among the m at most α, where m unadjusted tests at 95 % would name
    one by chance about m/20 of the time each."""
    tested = sorted((p, i) for i, p in enumerate(p_values) if p is not None)
    m = len(tested)
    adjusted: list[float | None] = [None] * len(p_values)
    running = 0.0
    for rank, (p, i) in enumerate(tested):
        running = max(running, min(1.0, (m - rank) * p))
        adjusted[i] = running
    return adjusted


def seeds_needed(mean_diff: float, std_diff: float, alpha: float = 0.05, power: float = 0.8) -> int | None:
    """The fewest seeds with which a paired t-test at ``alpha`` (two-sided) detects a true
    mean difference ``mean_diff`` with paired std ``std_diff`` with probability ``power``
    (the noncentral t); None when there is no effect to detect or the std is unknown."""
    if not (math.isfinite(mean_diff) and math.isfinite(std_diff)) or mean_diff == 0 or std_diff <= 0:
        return None
    from scipy.special import nctdtr

    effect = abs(mean_diff) / std_diff
    for n in range(2, 10_001):
        critical = float(stdtrit(n - 1, 1 - alpha / 2))
        shift = effect * math.sqrt(n)
        achieved = 1 - float(nctdtr(n - 1, shift, critical)) + float(nctdtr(n - 1, shift, -critical))
        if achieved >= power:
            return n
    return None


# --------------------------------------------------------------------------- groups of runs
def completed(rows: Iterable[Row]) -> list[Row]:
    return [row for row in rows if row.get("status") == "complete"]


def variant_order(rows: Iterable[Row], spec_variants: Sequence[str] = ()) -> list[str]:
    """Variants in the study's order, then any others in order of appearance."""
    order = list(dict.fromkeys(spec_variants))
    for row in rows:
        if row["variant"] not in order:
            order.append(row["variant"])
    return order


def baseline_name(variants: Sequence[str]) -> str | None:
    """The variant named "baseline", else the first one."""
    if not variants:
        return None
    return "baseline" if "baseline" in variants else variants[0]


def grid_values(rows: Iterable[Row]) -> list[Any]:
    """The distinct grid values, sorted (numbers numerically); [] when the study has no grid."""
    values = list(dict.fromkeys(row.get("grid_value") for row in rows if row.get("grid_value") is not None))
    try:
        return sorted(values)
    except TypeError:  # mixed types: keep the study's order
        return values


GroupKey = tuple[str, Any]  # (variant, grid value or None)


def group_runs(rows: Iterable[Row]) -> dict[GroupKey, list[Row]]:
    groups: dict[GroupKey, list[Row]] = {}
    for row in rows:
        groups.setdefault((row["variant"], row.get("grid_value")), []).append(row)
    return groups


def group_summaries(
    rows: Iterable[Row], metrics: Iterable[str] = METRICS, confidence: float = CONFIDENCE
) -> dict[GroupKey, dict[str, Summary]]:
    """Per (variant, grid value): a Summary of each metric over the completed runs' seeds."""
    metrics = tuple(metrics)
    return {
        key: {
            m: describe((metric_value(r, m) for r in runs), confidence, SCALES.get(m, "linear"))
            for m in metrics
        }
        for key, runs in group_runs(completed(rows)).items()
    }


# --------------------------------------------------------------------------- paired comparison
@dataclass(frozen=True)
class Comparison:
    """remedy − baseline on one metric, paired on (seed, grid value).

    ``p_value`` is the two-sided paired t-test's, None when it is
    undefined; ``note`` then says why.
    """

    variant: str
    baseline: str
    metric: str
    n: int
    mean_diff: float
    std_diff: float
    low: float
    high: float
    p_value: float | None
    note: str = ""
    # Holm-adjusted over every remedy compared on this metric (compare_all sets it).
    p_adjusted: float | None = None

    @property
    def interval_defined(self) -> bool:
        return math.isfinite(self.low) and math.isfinite(self.high)

    @property
    def tells_apart(self) -> bool:
        """True when the difference is beyond seed noise after adjusting for the number of
        remedies compared (Holm): adjusted p < 1 − confidence. Without an adjusted p (a
        comparison made alone), when its interval excludes 0."""
        if self.p_adjusted is not None:
            return self.p_adjusted < 1 - CONFIDENCE
        if self.p_value is not None:
            return self.p_value < 1 - CONFIDENCE
        # No test (one seed, or differences of zero variance: every seed moved by the same
        # amount, often one image of the validation set): nothing can be told apart.
        return False

    @property
    def seeds_needed(self) -> int | None:
        """Seeds a paired test would need to detect this mean difference (80 % power)."""
        return seeds_needed(self.mean_diff, self.std_diff)


def _pair_key(row: Row) -> tuple[Any, Any]:
    return (row.get("seed"), row.get("grid_value"))


def pair_values(
    baseline_rows: Iterable[Row], remedy_rows: Iterable[Row], metric: str
) -> tuple[np.ndarray, np.ndarray]:
    """Values of matched runs (same seed and grid value, both finite), in the baseline's order."""
    base = {_pair_key(r): metric_value(r, metric) for r in completed(baseline_rows)}
    remedy = {_pair_key(r): metric_value(r, metric) for r in completed(remedy_rows)}
    keys = [k for k in base if k in remedy and math.isfinite(base[k]) and math.isfinite(remedy[k])]
    return (np.array([base[k] for k in keys], dtype=float), np.array([remedy[k] for k in keys], dtype=float))


def paired_t_p_value(diff: np.ndarray) -> float:
    """Two-sided p of the paired t-test on the differences (``scipy.stats.ttest_rel``'s)."""
    n = len(diff)
    t = float(np.mean(diff)) / (float(np.std(diff, ddof=1)) / math.sqrt(n))
    return float(2 * stdtr(n - 1, -abs(t)))


def compare(
    baseline_rows: Iterable[Row],
    remedy_rows: Iterable[Row],
    metric: str,
    variant: str = "",
    baseline: str = "baseline",
    confidence: float = CONFIDENCE,
) -> Comparison:
    base, remedy = pair_values(baseline_rows, remedy_rows, metric)
    diff = remedy - base
    n = len(diff)
    summary = describe(diff, confidence)
    p_value: float | None = None
    if n == 0:
        note = "no matched seeds"
    elif n < 2:
        note = "one matched seed: no interval, no test"
    elif float(np.ptp(diff)) == 0.0:
        # Every pair differs by the same amount: t = d̄ / 0, the test is undefined.
        note = "the differences have zero variance: p undefined"
    else:
        p_value = paired_t_p_value(diff)
        note = ""
    return Comparison(
        variant, baseline, metric, n, summary.mean, summary.std, summary.low, summary.high, p_value, note
    )


def compare_all(
    rows: Iterable[Row],
    metrics: Iterable[str] = COMPARED,
    baseline: str | None = None,
    spec_variants: Sequence[str] = (),
    confidence: float = CONFIDENCE,
) -> dict[str, dict[str, Comparison]]:
    """Every non-baseline variant against the baseline: {variant: {metric: Comparison}}."""
    rows = list(rows)
    order = variant_order(rows, spec_variants)
    baseline = baseline or baseline_name(order)
    if baseline is None:  # no variant at all: nothing to compare
        return {}
    by_variant: dict[str, list[Row]] = {}
    for row in rows:
        by_variant.setdefault(row["variant"], []).append(row)
    base_rows = by_variant.get(baseline, [])
    out = {
        variant: {
            m: compare(base_rows, by_variant.get(variant, []), m, variant, baseline, confidence)
            for m in metrics
        }
        for variant in order
        if variant != baseline
    }
    for metric in metrics:  # each metric's family: every remedy against the one baseline
        variants = list(out)
        adjusted = holm([out[v][metric].p_value for v in variants])
        for variant, p in zip(variants, adjusted, strict=True):
            out[variant][metric] = dataclasses.replace(out[variant][metric], p_adjusted=p)
    return out


def gap_reduction(comparison: Comparison) -> float:
    """How much a remedy closes the accuracy gap: baseline gap − remedy gap (positive is better)."""
    return -comparison.mean_diff


def verdict(accuracy: Comparison, gap: Comparison | None = None) -> str:
    """What a comparison of the returned model's valid accuracy says, in words, after Holm's
    adjustment: higher, lower (under-fitting when the gap is narrower too), or not told apart.
    The gap describes; it never decides (a narrower gap at equal accuracy is no cure)."""
    if accuracy.n == 0:
        return "no run matches a baseline seed"
    if accuracy.tells_apart and accuracy.mean_diff > 0:
        return f"higher valid accuracy than baseline (adjusted, n={accuracy.n})"
    if accuracy.tells_apart and accuracy.mean_diff < 0:
        narrower = gap is not None and gap.tells_apart and gap.mean_diff < 0
        return (
            f"under-fits: lower valid accuracy than baseline, with a narrower gap (adjusted, n={accuracy.n})"
            if narrower
            else f"lower valid accuracy than baseline (adjusted, n={accuracy.n})"
        )
    why = f"; {accuracy.note}" if accuracy.note else ""
    return f"valid accuracy not told apart from baseline (n={accuracy.n}{why})"


def comparisons_table(rows: Iterable[Row], spec_variants: Sequence[str] = ()) -> dict[str, Any]:
    """The report's comparison table as plain data: every remedy against the baseline, ranked
    by how much it closes the gap, each metric's paired difference and the verdict."""
    rows = list(rows)
    order = variant_order(rows, spec_variants)
    baseline = baseline_name(order)
    comparisons = compare_all(rows, baseline=baseline, spec_variants=spec_variants)

    def number(x: float | None) -> float | None:
        return round(x, 6) if x is not None and math.isfinite(x) else None

    return {
        "baseline": baseline,
        "ranked_by": HEADLINE_METRIC,
        "confidence": CONFIDENCE,
        "remedies": [
            {
                "variant": variant,
                "gap_reduction": number(gap_reduction(comparisons[variant][GAP_METRIC])),
                "verdict": verdict(comparisons[variant][HEADLINE_METRIC], comparisons[variant][GAP_METRIC]),
                "differences": {
                    metric: {
                        "mean": number(c.mean_diff),
                        "low": number(c.low),
                        "high": number(c.high),
                        "p_value": number(c.p_value),
                        "p_adjusted": number(c.p_adjusted),
                        "seeds_needed": c.seeds_needed if not c.tells_apart else None,
                        "n": c.n,
                        "note": c.note,
                    }
                    for metric, c in comparisons[variant].items()
                },
            }
            for variant in rank_by_effect(comparisons)
        ],
    }


def rank_by_effect(
    comparisons: Mapping[str, Mapping[str, Comparison]], metric: str = HEADLINE_METRIC
) -> list[str]:
    """Variants by their effect on the returned model's valid accuracy, largest first; ones with
    no matched seeds last."""

    def key(variant: str) -> tuple[int, float]:
        effect = comparisons[variant][metric].mean_diff
        return (0, -effect) if math.isfinite(effect) else (1, 0.0)

    return sorted(comparisons, key=key)


def format_p(p_value: float | None) -> str:
    if p_value is None:
        return "undefined"
    return "< 0.001" if p_value < 0.001 else f"{p_value:.3f}"


def fmt(value: float, digits: int = 3) -> str:
    """A number for people: NaN reads as an en dash, large counts get thousands separators."""
    if value is None or not math.isfinite(value):
        return "–"
    if round(value, digits) == 0:
        value = 0.0  # no "-0.000"
    if abs(value) >= 1000 and float(value).is_integer():
        return f"{int(value):,}"
    return f"{value:.{digits}f}"
