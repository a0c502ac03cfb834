"""Learning-curve extrapolation: the curve families, their fits, and a prediction interval
calibrated by backtest (pure functions; ``benchmarks.backtest`` measures them on real curves).

A family maps the training-set size n to the valid error e(n). Each is fitted to the mean error
per size over seeds; the prediction at a size beyond the largest measured comes with a band: the
spread of the prediction when the seeds are resampled at every size (the bootstrap), widened by
a factor KAPPA that the backtest measured, because the bootstrap sees the seeds' noise but not
the family's misfit, which grows with the distance extrapolated."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

# The families compared by the backtest (Viering & Loog 2022 and the LCDB of Mohr et al. 2022
# name most of them): the last error held (no gain, the null), linear in log n, the power law
# without an asymptote (least squares on log-log, plain and weighted by the seeds' spread) and
# with one (c between 0 and the smallest error measured), the 4-parameter Morgan-Mercer-Flodin
# curve, and the mean of the two power laws.
FAMILIES = ("last", "log2", "pow2", "pow2w", "pow3", "mmf4", "mix")
# Chosen by ``python -m benchmarks.learning_curves --backtest`` (68 cases on the digits, MNIST and
# Fashion-MNIST, five seeds per fit): the mix has the smallest mean absolute error at 2× (0.0067;
# pow2 0.0072, pow3 0.0076) and at 4× (0.0113; 0.0128, 0.0137), the smallest bias (+0.001,
# +0.003: pow2 over-predicts a flattening curve, pow3 under-predicts it) and the narrowest
# calibrated band at 4×. It was devised after the digits and MNIST were seen; Fashion-MNIST,
# measured after, was its held-out check (0.0073 and 0.0145 there, pow2's 0.0072 and 0.0146).
DEFAULT = "mix"
WORDS = {  # each family as a sentence names it
    "last": "last accuracy held",
    "log2": "log-linear curve",
    "pow2": "power law",
    "pow2w": "weighted power law",
    "pow3": "power law with an asymptote",
    "mmf4": "Morgan-Mercer-Flodin curve",
    "mix": "mean of two power laws (with and without an asymptote)",
}
# The bootstrap's spread times KAPPA[ratio] is the half-width of a 95 % band at ratio × the
# largest size measured (ratios in between: interpolated in log ratio, beyond 4×: 4×'s). The
# backtest's 95th percentile of |error| / spread over all its cases; calibrated leaving one data
# set out, the band covered 0.90 (2×) and 0.89 (4×) of the cases of the set left out.
KAPPA = {2.0: 3.2, 4.0: 3.7}
RESAMPLES = 200


@dataclass(frozen=True)
class Fit:
    family: str
    params: tuple[float, ...]

    def error(self, n: float | np.ndarray) -> np.ndarray:
        out: np.ndarray = np.clip(_FUNCTIONS[self.family](np.asarray(n, dtype=float), *self.params), 0.0, 1.0)
        return out

    def accuracy(self, n: float) -> float:
        return float(1.0 - self.error(n))


@dataclass(frozen=True)
class Prediction:
    size: int  # where it predicts
    accuracy: float  # the fit's valid accuracy there
    low: float  # the band, inside [0, 1]
    high: float
    spread: float  # the bootstrap's standard deviation of the prediction
    family: str


def _log2(n: np.ndarray, a: float, b: float) -> np.ndarray:
    out: np.ndarray = a - b * np.log(n)
    return out


def _pow2(n: np.ndarray, a: float, b: float) -> np.ndarray:
    out: np.ndarray = a * np.power(n, -b)
    return out


def _pow3(n: np.ndarray, a: float, b: float, c: float) -> np.ndarray:
    out: np.ndarray = a * np.power(n, -b) + c
    return out


def _mmf4(n: np.ndarray, a: float, b: float, c: float, d: float) -> np.ndarray:
    # e(n) = (a·b + c·n^d) / (b + n^d): from a at n = 0 to c as n grows, written with
    # b = exp(β) so that b stays positive.
    nd = np.power(n, d)
    out: np.ndarray = (a * b + c * nd) / (b + nd)
    return out


def _mix(n: np.ndarray, a2: float, b2: float, a3: float, b3: float, c3: float) -> np.ndarray:
    # The mean of the two power laws' predictions: where they disagree, the truth has been
    # between them (pow2 over-predicts what a flattening curve gains, pow3 under-predicts).
    out: np.ndarray = 0.5 * (_pow2(n, a2, b2) + _pow3(n, a3, b3, c3))
    return out


def _last(n: np.ndarray, e: float) -> np.ndarray:
    return np.full_like(n, e, dtype=float)


_FUNCTIONS: dict[str, Callable[..., np.ndarray]] = {
    "last": _last,
    "log2": _log2,
    "pow2": _pow2,
    "pow2w": _pow2,
    "pow3": _pow3,
    "mmf4": _mmf4,
    "mix": _mix,
}


def fit(
    family: str,
    sizes: Sequence[float] | np.ndarray,
    errors: Sequence[float] | np.ndarray,
    spreads: Sequence[float] | None = None,
) -> Fit | None:
    """The family fitted to mean errors per size; None where it cannot be (too few sizes, a
    zero error for a log fit, no convergence). ``spreads``, the standard errors of the means,
    weigh pow2w's sizes."""
    x, y = np.asarray(sizes, dtype=float), np.asarray(errors, dtype=float)
    if family not in _FUNCTIONS:
        raise ValueError(f"unknown curve family {family!r}: one of {', '.join(FAMILIES)}")
    if len(x) < 2 or not np.isfinite(y).all():
        return None
    if family == "last":
        return Fit(family, (float(y[np.argmax(x)]),))
    if family == "log2":
        slope, intercept = np.polyfit(np.log(x), y, 1)
        return Fit(family, (float(intercept), float(-slope)))
    if family == "pow2":
        # Least squares on log e against log n: the errors' noise is roughly proportional to
        # them (a binomial error's spread over seeds grows with it), so the log scale weighs
        # the sizes alike.
        if (y <= 0).any():
            return None
        slope, intercept = np.polyfit(np.log(x), np.log(y), 1)
        return Fit(family, (float(math.exp(intercept)), float(-slope)))
    if family == "pow2w":
        # Weighted by the inverse variance of log e (the mean's standard error over e): the
        # noisy small sizes count less than the steadier large ones the prediction extends.
        if (y <= 0).any() or spreads is None:
            return None
        se = np.maximum(np.asarray(spreads, dtype=float), 1e-3) / y
        slope, intercept = np.polyfit(np.log(x), np.log(y), 1, w=1 / se)
        return Fit(family, (float(math.exp(intercept)), float(-slope)))
    if family == "mix":
        two, three = fit("pow2", x, y), _curve_fit("pow3", x, y)
        return None if two is None or three is None else Fit(family, two.params + three.params)
    return _curve_fit(family, x, y)


def _curve_fit(family: str, x: np.ndarray, y: np.ndarray) -> Fit | None:
    from scipy.optimize import OptimizeWarning, curve_fit  # start-up: scipy only where a fit is made

    if len(x) < (3 if family == "pow3" else 4):
        return None
    if family == "pow3":
        # The asymptote c is held between 0 and the smallest error measured: more data does not
        # make a model worse on average, and below 0 an error is meaningless.
        start = [max(float(y[0] - y[-1]), 1e-3) * float(x[0]) ** 0.5, 0.5, float(y.min()) * 0.5]
        bounds = ([0.0, 0.0, 0.0], [np.inf, 3.0, float(y.min())])
    else:
        start = [float(min(1.0, 2 * y[0])), float(np.median(x)), float(y.min()) * 0.5, 1.0]
        bounds = ([0.0, 1e-6, 0.0, 0.05], [1.0, np.inf, float(y.min()), 5.0])
    try:
        with warnings.catch_warnings():  # as many parameters as points: no covariance, no matter
            warnings.simplefilter("ignore", OptimizeWarning)
            params, _ = curve_fit(_FUNCTIONS[family], x, y, p0=start, bounds=bounds, maxfev=20_000)
    except (RuntimeError, ValueError):
        return None
    return Fit(family, tuple(float(p) for p in params))


def collapsed(accuracies: Sequence[float], chance: float) -> list[bool]:
    """Which runs collapsed: lost more than half of what the size's median run learned above
    chance (Adam at 0.01 without batch norm kills every unit of a CNN on a few seeds in a
    hundred: it then predicts one class, whatever the data). Such a run says the training is
    unstable, not what more data brings; where the median itself is near chance, none is."""
    median = float(np.median(accuracies)) if len(accuracies) else chance
    if median - chance < 0.2:
        return [False] * len(accuracies)
    bar = chance + 0.5 * (median - chance)
    return [a < bar for a in accuracies]


def mean_errors(accuracies: Sequence[Sequence[float] | np.ndarray]) -> list[float]:
    return [1.0 - float(np.mean(v)) for v in accuracies]


def standard_errors(accuracies: Sequence[Sequence[float] | np.ndarray]) -> list[float]:
    """Each size's standard error of the mean over seeds (NaN with one seed)."""
    return [float(np.std(v, ddof=1) / math.sqrt(len(v))) if len(v) > 1 else math.nan for v in accuracies]


def fitted(
    family: str, sizes: Sequence[float], accuracies: Sequence[Sequence[float] | np.ndarray]
) -> Fit | None:
    """The family fitted to the seeds' accuracies per size."""
    return fit(family, sizes, mean_errors(accuracies), standard_errors(accuracies))


def kappa(ratio: float) -> float:
    """The band's width in bootstrap spreads at ``ratio`` × the largest size measured."""
    points = sorted(KAPPA.items())
    logs = [math.log(r) for r, _ in points]
    return float(np.interp(math.log(max(ratio, 1.0)), logs, [k for _, k in points]))


def resampled(accuracies: Sequence[Sequence[float]], seed: int, resamples: int) -> Iterator[list[np.ndarray]]:
    """The bootstrap: ``resamples`` draws of the seeds at every size, with replacement (the
    same draws for the same ``seed``)."""
    rng = np.random.default_rng(seed)
    for _ in range(resamples):
        yield [rng.choice(np.asarray(v, dtype=float), size=len(v), replace=True) for v in accuracies]


def predictions(
    sizes: Sequence[int],
    accuracies: Sequence[Sequence[float]],
    targets: Sequence[int],
    family: str = DEFAULT,
    seed: int = 0,
    resamples: int = RESAMPLES,
    width: float | None = None,
) -> list[Prediction] | None:
    """The valid accuracy predicted at each of ``targets`` images from the seeds' accuracies per
    size, with its band (``width`` bootstrap spreads; default: the backtest's KAPPA at the
    target's ratio). Each resample is fitted once and read at every target."""
    point_fit = fitted(family, sizes, accuracies)
    if point_fit is None:
        return None
    refits = [f for draw in resampled(accuracies, seed, resamples) if (f := fitted(family, sizes, draw))]
    out = []
    for target in targets:
        point = point_fit.accuracy(target)
        spread = float(np.std([f.accuracy(target) for f in refits], ddof=1)) if len(refits) > 10 else math.nan
        half = (kappa(target / max(sizes)) if width is None else width) * spread
        low, high = (
            (max(0.0, point - half), min(1.0, point + half)) if math.isfinite(half) else (math.nan,) * 2
        )
        out.append(Prediction(target, point, low, high, spread, family))
    return out


def predict(
    sizes: Sequence[int],
    accuracies: Sequence[Sequence[float]],
    target: int,
    family: str = DEFAULT,
    seed: int = 0,
    resamples: int = RESAMPLES,
    width: float | None = None,
) -> Prediction | None:
    """``predictions`` at one target."""
    found = predictions(sizes, accuracies, [target], family, seed, resamples, width)
    return None if found is None else found[0]


def asymptote(
    sizes: Sequence[int], accuracies: Sequence[Sequence[float]], seed: int = 0, resamples: int = RESAMPLES
) -> tuple[float, float] | None:
    """The 95 % bootstrap interval of pow3's asymptotic accuracy 1 − c, or None where the data do
    not identify it: the interval reaches the best accuracy measured (c = its lower bound) or
    100 % (c = 0), so it says no more than "somewhere above what was measured"."""
    refits = (fit("pow3", sizes, mean_errors(draw)) for draw in resampled(accuracies, seed, resamples))
    ceilings = [1.0 - f.params[2] for f in refits if f is not None]
    if len(ceilings) < resamples // 2:
        return None
    low, high = (float(q) for q in np.quantile(ceilings, [0.025, 0.975]))
    best = max(float(np.mean(v)) for v in accuracies)
    if high > 1.0 - 1e-6 or low < best + 1e-6:
        return None
    return low, high
