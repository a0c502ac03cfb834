"""Decisions over stages of seeds: which remedy helps, hurts, or changes nothing beyond a margin,
with the family-wise error at most 5 % however the seeds were spent.

The design is fixed before the first run: stages of seeds (a study's default: 5, then 5 more),
the remedies compared (K), the margin δ and α = 0.05. Every remedy gets α/K (Bonferroni over
the family), split into one-sided tests at α/(2K) each: "θ > 0" (helps), "θ < 0" (hurts), and
"θ > −δ" with "θ < δ" (both: no effect larger than δ), where θ is the mean paired difference of
the returned models' held-out accuracy, remedy − baseline, on the same seed.

Each stage's seeds are new (disjoint from the earlier stages'), so each stage gives an exact
one-sided paired t-test on its own seeds, whatever was decided before it; its p-value becomes
z = Φ⁻¹(1 − p). The stages combine by the inverse-normal rule with weights fixed in advance,
Z_k = Σ w_s z_s / √Σ w_s² with w_s = √n_s (Lehmacher & Wassmer 1999): under θ at a test's
boundary the z's are independent N(0, 1), so Z_1, Z_2, ... are the canonical group-sequential
statistics and the O'Brien-Fleming-type boundaries of Lan & DeMets spend the test's α over the
stages exactly. Dropping a remedy once it is decided, or once no stage left could decide it
(futility, not binding), only lowers the chance of a false claim. The interval of a remedy is
the repeated confidence interval at the stage it stopped (Jennison & Turnbull): every c the
stage-wise tests cannot reject; so "helps" is exactly "its interval is above 0", and all the
family's intervals hold together with probability ≥ 95 %.

Variances are each remedy's own, per stage: the remedies' seed-to-seed spreads differ several-
fold (the digits' all-remedies 0.042 against batchnorm's 0.0065), so a pooled variance would
over-claim for the noisy ones; the stages' own t-tests trust no equality of variances.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import NamedTuple

import numpy as np
from scipy.optimize import brentq
from scipy.special import ndtr, ndtri, stdtr, stdtrit

ALPHA = 0.05  # family-wise: the chance of any false claim among the remedies compared
FUTILITY_QUANTILE = 1.2816  # a stage's z at its 90th percentile: the futility look's optimism


class Answer(StrEnum):
    HELPS = "helps"
    HURTS = "hurts"
    NO_EFFECT = "no effect"  # no effect larger than the margin, either way
    UNDECIDED = "undecided"


# --------------------------------------------------------------------------- boundaries
def obf_spent(fraction: float, alpha: float) -> float:
    """α spent by information fraction t: Lan-DeMets' O'Brien-Fleming-type 2 − 2Φ(z_{α/2}/√t)
    for a one-sided test at ``alpha``: little early, nearly all of it at the last stage."""
    if fraction <= 0:
        return 0.0
    return float(2.0 - 2.0 * ndtr(ndtri(1.0 - alpha / 2.0) / math.sqrt(min(fraction, 1.0))))


def _crossing(b: float, t: float, scale: float, nodes: np.ndarray, mass: np.ndarray) -> float:
    """P(the first crossing of b is at this look): ``mass`` is S_{k−1}'s density × weights on
    ``nodes`` below the earlier boundaries (none before the first look)."""
    if nodes.size == 0:
        return float(1.0 - ndtr(b))
    return float(np.sum(mass * (1.0 - ndtr((b * math.sqrt(t) - nodes) / scale))))


def boundaries(fractions: Sequence[float], alpha: float, points: int = 1001) -> tuple[float, ...]:
    """One-sided group-sequential critical values b_k on Z_k at the information fractions
    (increasing, the last 1), such that P(Z_k ≥ b_k at some k) = alpha under the null.

    Numerical integration of the score process S_k = Z_k √t_k, whose increments are
    independent N(0, t_k − t_{k−1}) (Armitage, McPherson & Rowe's recursion): the density of
    S_k where it stayed below every boundary, on a grid that ends at the boundary (so the
    trapezoid rule keeps its second order)."""
    out: list[float] = []
    nodes = weights = density = np.array([])  # S_{k−1} below its boundary, and its density there
    previous_t, spent = 0.0, 0.0
    for k, t in enumerate(fractions):
        target = obf_spent(t, alpha) - spent
        scale = math.sqrt(t - previous_t)
        crossing = functools.partial(_crossing, t=t, scale=scale, nodes=nodes, mass=weights * density)
        if target > 0:
            b = float(brentq(lambda b, f=crossing, target=target: f(b) - target, -10.0, 40.0, xtol=1e-12))
        else:
            b = math.inf
        out.append(b)
        top = min(b * math.sqrt(t), 12.0 * math.sqrt(t))
        new_nodes = np.linspace(-12.0 * math.sqrt(t), top, points)
        if k == 0:
            new_density = np.exp(-0.5 * new_nodes**2 / t) / math.sqrt(2 * math.pi * t)
        else:
            kernel = np.exp(-0.5 * ((new_nodes[:, None] - nodes[None, :]) / scale) ** 2)
            new_density = kernel @ (weights * density) / (math.sqrt(2 * math.pi) * scale)
        step = new_nodes[1] - new_nodes[0]
        weights = np.full(points, step)
        weights[[0, -1]] = step / 2  # trapezoid
        nodes, density = new_nodes, new_density
        spent += target
        previous_t = t
    return tuple(out)


# --------------------------------------------------------------------------- stage statistics
class Stage(NamedTuple):
    """A stage's paired differences as its t-test sees them, summarised once: every test and
    interval end is the same numbers at another shift (a brentq search asks dozens)."""

    n: int
    mean: float
    sd: float

    @classmethod
    def of(cls, diffs: np.ndarray) -> Stage:
        n = len(diffs)
        return cls(
            n, float(np.mean(diffs)) if n else math.nan, float(np.std(diffs, ddof=1)) if n > 1 else 0.0
        )

    def z(self, shift: float, upper: bool) -> float:
        """Φ⁻¹(1 − p) of the one-sided paired t-test of θ > shift (``upper``) or θ < shift.

        Fewer than two seeds, or differences all equal, give no test: z = 0, no evidence."""
        if self.n < 2 or self.sd == 0.0:
            # All equal: every seed moved by the same amount (accuracies move in steps of one
            # image, so three seeds can agree exactly): t is undefined, and an infinite z would
            # claim certainty from a coincidence. No evidence instead.
            return 0.0
        t = (self.mean - shift) / (self.sd / math.sqrt(self.n))
        return float(ndtri(stdtr(self.n - 1, t if upper else -t)))  # 1 − p = T_{n−1}(t)


def stage_z(diffs: np.ndarray, shift: float, upper: bool) -> float:
    """One stage's z (``Stage.z``) from its paired differences."""
    return Stage.of(diffs).z(shift, upper)


def _combined(stages: Sequence[Stage], weights: Sequence[float], shift: float, upper: bool) -> float:
    used = weights[: len(stages)]
    total = sum(w * stage.z(shift, upper) for w, stage in zip(used, stages, strict=True))
    return float(total / math.sqrt(sum(w * w for w in used)))


def combined(stage_diffs: Sequence[np.ndarray], weights: Sequence[float], shift: float, upper: bool) -> float:
    """The inverse-normal combination of the stages analysed so far."""
    return _combined([Stage.of(d) for d in stage_diffs], weights, shift, upper)


# --------------------------------------------------------------------------- the design
@dataclass(frozen=True)
class Design:
    """What is fixed before the first run: stages, family size, margin and α."""

    stages: tuple[int, ...]  # seeds per stage
    remedies: int  # K, the family compared with one baseline
    margin: float  # δ
    alpha: float = ALPHA
    bounds: tuple[float, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.stages or any(n < 1 for n in self.stages):
            raise ValueError(f"every stage needs a seed, got {self.stages}")
        total = sum(self.stages)
        fractions = [sum(self.stages[: k + 1]) / total for k in range(len(self.stages))]
        object.__setattr__(self, "bounds", boundaries(fractions, self.test_alpha))

    @property
    def test_alpha(self) -> float:
        """Each one-sided test's level: α split over the remedies and both directions."""
        return self.alpha / (2 * max(self.remedies, 1))

    @property
    def weights(self) -> tuple[float, ...]:
        return tuple(math.sqrt(n) for n in self.stages)

    @property
    def max_seeds(self) -> int:
        return sum(self.stages)


@dataclass(frozen=True)
class Decision:
    """One remedy's answer: its effect on held-out accuracy and the simultaneous interval."""

    variant: str
    answer: Answer
    effect: float  # mean paired difference over every seed it ran (remedy − baseline)
    low: float  # the repeated confidence interval at the stage it stopped
    high: float
    seeds: int  # paired seeds analysed
    stages: int  # stages it took part in
    margin: float
    stopped: str  # "decided", "futile" (no stage left could decide it), or "budget"
    seeds_to_settle: int | None = None  # for an undecided one: paired seeds that would likely do

    def _bound(self, x: float) -> str:
        """An interval's end with the digits its answer needs: a "helps" lower end of 0.0004
        reads +0.0004, not +0.000; a "no effect" end of 0.00998 reads +0.00998, not +0.010."""
        edges = {Answer.HELPS: (0.0,), Answer.HURTS: (0.0,), Answer.NO_EFFECT: (-self.margin, self.margin)}
        digits = 3
        while digits < 6 and any(round(x, digits) == edge for edge in edges.get(self.answer, ())):
            digits += 1
        return f"{x:+.{digits}f}"

    def sentence(self) -> str:
        """The answer in words, the same in the terminal, --json, the report and the notebook."""
        if self.stopped == "no runs":
            return "no run completed: nothing to compare"
        effect = f"{self.effect:+.3f} [{self._bound(self.low)}, {self._bound(self.high)}]"
        n = f"{self.seeds} seeds"
        if self.answer is Answer.HELPS:
            return f"helps: {effect} held-out accuracy ({n})"
        if self.answer is Answer.HURTS:
            return f"hurts: {effect} held-out accuracy ({n})"
        if self.answer is Answer.NO_EFFECT:
            return f"no effect larger than ±{self.margin:.3f}: {effect} ({n})"
        more = (
            f"about {self.seeds_to_settle} seeds in all would likely settle it"
            if self.seeds_to_settle is not None
            else "not even 1,000 seeds would likely settle it"
        )
        return f"undecided at {n}: {effect}; {more}"


def _interval(
    stages: Sequence[Stage], centre: float, weights: Sequence[float], bound: float
) -> tuple[float, float]:
    """Every c in [−1, 1] (a difference of accuracies lies there) that neither one-sided
    combined test rejects at ``bound``; ``centre``, the mean difference, is inside it."""
    if not stages or not math.isfinite(bound):
        return -1.0, 1.0

    def upper_rejects(c: float) -> float:  # decreasing in c; zero at the interval's lower end
        return _combined(stages, weights, c, True) - bound

    def lower_rejects(c: float) -> float:  # increasing in c; zero at the upper end
        return _combined(stages, weights, c, False) - bound

    low = brentq(upper_rejects, -1.0, centre) if upper_rejects(centre) < 0 < upper_rejects(-1.0) else -1.0
    high = brentq(lower_rejects, centre, 1.0) if lower_rejects(centre) < 0 < lower_rejects(1.0) else 1.0
    return float(low), float(high)


def _futile(stages: Sequence[Stage], mean: float, sd: float, design: Design) -> bool:
    """No stage left could decide it: even with every future stage's z at its 90th percentile
    under the current estimate (``mean``, ``sd`` over every seed so far), no test reaches the
    last boundary. Not binding: stopping only lowers the chance of a false claim."""
    k = len(stages)
    if k >= len(design.stages) or sum(stage.n for stage in stages) < 2:
        return False
    w = design.weights
    norm = math.sqrt(sum(x * x for x in w))
    final = design.bounds[-1]

    def reachable(shift: float, upper: bool) -> bool:
        drift = (mean - shift) / sd if sd > 0 else math.copysign(math.inf, mean - shift)
        drift = drift if upper else -drift
        past = sum(wi * stage.z(shift, upper) for wi, stage in zip(w, stages, strict=False))
        future = sum(
            wi * (drift * math.sqrt(n) + FUTILITY_QUANTILE)
            for wi, n in zip(w[k:], design.stages[k:], strict=True)
        )
        return (past + future) / norm >= final

    helps, hurts = reachable(0.0, True), reachable(0.0, False)
    equivalent = reachable(-design.margin, True) and reachable(design.margin, False)
    return not (helps or hurts or equivalent)


def seeds_to_settle(effect: float, sd: float, seeds: int, design: Design, power: float = 0.8) -> int | None:
    """Paired seeds in all (more than ``seeds``) with which a one-stage t-test at the design's
    level would likely decide, at this effect and spread: show its sign, or show it inside the
    margin, whichever needs fewer. None when neither would within 1,000 seeds."""
    if not (math.isfinite(effect) and math.isfinite(sd)) or sd <= 0:
        return None
    gaps = [g for g in (abs(effect), design.margin - abs(effect)) if g > 0]
    for n in range(max(seeds + 1, 3), 1001):
        needed = (
            (float(stdtrit(n - 1, 1 - design.test_alpha)) + float(stdtrit(n - 1, power))) * sd / math.sqrt(n)
        )
        if any(g >= needed for g in gaps):
            return n
    return None


def decide(variant: str, stage_diffs: Sequence[np.ndarray], design: Design) -> Decision:
    """The answer after the stages analysed so far (``stage_diffs``: the paired differences of
    each stage this remedy ran, in order); ``stopped`` says whether it needs another stage."""
    k = len(stage_diffs)
    stages = [Stage.of(d) for d in stage_diffs]
    pooled = np.concatenate(stage_diffs) if stage_diffs else np.array([])
    effect = float(np.mean(pooled)) if len(pooled) else math.nan
    spread = float(np.std(pooled, ddof=1)) if len(pooled) > 1 else math.nan
    low, high = _interval(stages, effect, design.weights, design.bounds[k - 1])
    if low > 0:
        answer = Answer.HELPS
    elif high < 0:
        answer = Answer.HURTS
    elif -design.margin < low and high < design.margin:
        answer = Answer.NO_EFFECT
    else:
        answer = Answer.UNDECIDED
    if answer is not Answer.UNDECIDED:
        stopped = "decided"
    elif k >= len(design.stages):
        stopped = "budget"
    elif _futile(stages, effect, spread, design):
        stopped = "futile"
    else:
        stopped = ""  # open: give it the next stage
    settle = None
    if answer is Answer.UNDECIDED and stopped and len(pooled) >= 2:
        settle = seeds_to_settle(effect, spread, len(pooled), design)
    return Decision(variant, answer, effect, low, high, len(pooled), k, design.margin, stopped, settle)


def simulated(effect: float, spread: float, design: Design, rng: np.random.Generator) -> Decision:
    """One remedy of a simulated study: each stage's paired differences drawn from
    N(effect, spread²), stage after stage until it is decided, futile or out of stages, as a
    study spends its seeds (the calibration's and the tests' null and power)."""
    stages: list[np.ndarray] = []
    for n in design.stages:
        stages.append(rng.normal(effect, spread, n))
        decision = decide("simulated", stages, design)
        if decision.stopped:
            break
    return decision
