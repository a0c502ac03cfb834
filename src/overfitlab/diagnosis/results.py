"""What a diagnosis finds, as typed results, and the bounds and budgets that define it."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import stats

DIAGNOSIS_JSON = "diagnosis.json"
REPORT = "diagnosis.html"
TEST_FRACTION = 0.2  # carved from the training data, stratified, before anything trains
TEST_SPLIT_SEED = 0
RANDOM_LABELS = "random-labels"  # part 3's run folder, in the diagnosis folder
OUT_OF_FOLD = "out-of-fold.npz"  # part 5's predictions, kept for --resume
LABEL_ISSUES = "label-issues.csv"  # part 5's flagged images, for train --exclude / --relabel
MEMORISED = 0.99  # train accuracy on random labels that counts as memorised
# Severity from two one-sided 95 % bounds over seeds, never a point estimate: the final
# accuracy gap (train − valid) and the valid loss's rise from its minimum to the last epoch
# (relative). "strong" when both are above their bounds with 95 % confidence: a gap above
# 2 accuracy points (9 of the digits' 450 validation images, ten times the one-image step)
# and a rise above 10 % (the
# loss has turned, not wobbled: a plateau's epoch-to-epoch noise is a few %). "none" when
# both are below them with 95 % confidence. "mild" otherwise: over-fitting the seeds cannot rule out.
GAP_BOUND = 0.02
RISE_BOUND = 0.10
MEMORISE_EPOCHS = 3  # random labels train for up to this many times the recipe's epochs


@dataclass(frozen=True)
class Budget:
    seeds: int | str  # "auto": the remedies in stages of seeds, up to max_seeds, while undecided
    sizes: tuple[float, ...]  # fractions of the recipe's training-set size
    folds: int
    noise: tuple[float, ...]
    gallery: int = 12
    max_seeds: int = 10
    # Part 2 also measures the recipe at 2×, 4×, … its size up to this multiple, and at every
    # training image where those are no more: it extrapolates only beyond what was measured.
    above: int = 4


BUDGETS = {
    "quick": Budget(seeds=2, sizes=(0.25, 0.5, 1.0), folds=3, noise=(0.4,), above=2),
    # Sizes spaced evenly in log n (ratio √2), as the backtest's windows are.
    "standard": Budget(seeds="auto", sizes=(0.25, 0.354, 0.5, 0.707, 1.0), folds=3, noise=(0.2, 0.4)),
    "full": Budget(
        seeds="auto",
        sizes=(0.125, 0.177, 0.25, 0.354, 0.5, 0.707, 1.0),
        folds=5,
        noise=(0.2, 0.4),
        max_seeds=15,
        above=8,
    ),
}


# --------------------------------------------------------------------------- typed results
@dataclass(frozen=True)
class Interval:
    mean: float
    low: float
    high: float
    n: int
    values: tuple[float, ...] = ()  # the seeds' own values, shown beside the mean

    @classmethod
    def of(cls, values: Sequence[float], scale: str = "linear") -> Interval:
        summary = stats.describe(values, scale=scale)
        finite = tuple(float(v) for v in values if math.isfinite(v))
        return cls(summary.mean, summary.low, summary.high, summary.n, finite)

    def text(self, digits: int = 3) -> str:
        return (
            f"{stats.fmt(self.mean, digits)} [{stats.fmt(self.low, digits)}, {stats.fmt(self.high, digits)}]"
        )


@dataclass(frozen=True)
class Overfitting:
    train_acc: Interval  # at the last epoch
    valid_acc: Interval
    gap_best: Interval  # train − valid accuracy at the epoch of the lowest valid loss
    gap_last: Interval
    loss_rise: Interval  # (last − lowest valid loss) / lowest
    turn_epoch: Interval  # the epoch of the lowest valid loss
    stays_above_epoch: Interval  # the first epoch after which it stays above by more than the noise
    severity: str  # none | mild | strong


@dataclass(frozen=True)
class LearningCurve:
    """Part 2: valid accuracy over training-set sizes, measured up to the data there is, then
    extrapolated with a band the backtest calibrated."""

    sizes: tuple[int, ...]  # every size measured, the recipe's and those above it
    train_acc: tuple[Interval, ...]
    valid_acc: tuple[Interval, ...]
    recipe_size: int = 0  # the recipe's training-set size (the baseline's)
    available: int = 0  # the training images the diagnosis could use (its test split held out)
    # Per size above the recipe's: the valid accuracy gained over the recipe's size, paired over
    # seeds (measured), and what the curve fitted to the recipe's sizes alone predicted there.
    measured: tuple[Interval, ...] = ()
    checks: tuple[Interval | None, ...] = ()
    family: str = ""  # the curve family (extrapolation.FAMILIES) fitted to every size measured
    params: tuple[float, ...] = ()  # its parameters; () when it did not fit
    # Gains predicted over the largest size measured, at sizes from 2^¼× to 4× it, evenly in
    # log n (2× is the fourth): point and band, inside [−1, 1].
    predicted: tuple[Interval, ...] = ()
    predicted_sizes: tuple[int, ...] = ()
    ceiling: tuple[float, float] | None = None  # the asymptotic accuracy, where the data identify it
    warnings: tuple[str, ...] = ()

    @property
    def above(self) -> tuple[int, ...]:
        """The sizes measured above the recipe's."""
        return tuple(s for s in self.sizes if s > self.recipe_size)

    @property
    def doubled(self) -> tuple[int, Interval] | None:
        """The gain predicted at twice the largest size measured, and that size."""
        return (self.predicted_sizes[3], self.predicted[3]) if len(self.predicted) > 3 else None


@dataclass(frozen=True)
class Memorisation:
    epochs: int
    train_acc: tuple[float, ...]  # per epoch
    valid_acc: tuple[float, ...]
    epochs_to_memorise: int | None  # first epoch with train accuracy ≥ 0.99
    chance: float
    lr: float = 0.0  # the learning rate of the run shown
    # Every run tried, in order, as (learning rate, best train accuracy): the recipe's own
    # learning rate first, then a tenth of it when that one did not memorise.
    tries: tuple[tuple[float, float], ...] = ()


@dataclass(frozen=True)
class NoisyLabels:
    fraction: float
    best_epoch_acc: Interval  # peak valid accuracy (the epoch early stopping would keep)
    last_epoch_acc: Interval
    saved: Interval  # best − last, paired over seeds


@dataclass(frozen=True)
class LabelCheck:
    """Part 5 by confident learning (cleanlab): the flagged training images, listed in a CSV of
    the diagnosis folder that ``train --exclude`` and ``--relabel`` read, and how many of the
    scored images are estimated mislabelled."""

    scored: int
    flagged: int
    estimate: int
    low: int
    high: int
    csv: str  # the file's name in the diagnosis folder


@dataclass(frozen=True)
class GalleryImage:
    index: int  # its position in the data set's train split
    given: int
    predicted: int
    confidence: float  # the model's probability of its prediction
    loss: float  # out-of-fold loss of the given label
    png: str  # base64


@dataclass(frozen=True)
class Remedies:
    table: dict[str, Any]  # stats.comparisons_table
    recommended: str | None  # the remedy that helps most, if one does
    baseline_test: Interval
    recommended_test: Interval | None
    test_split: str = ""  # where the test images came from, in words
    # Each remedy's answer (studies.result.decision_dict), largest effect first, and what they answer.
    decisions: tuple[dict[str, Any], ...] = ()
    question: str = ""
    margin: float = 0.01


@dataclass
class Diagnosis:
    """Every part's finding; built by keyword (``diagnose`` does), as the parts are many."""

    recipe: dict[str, Any]
    budget: str
    overfitting: Overfitting
    learning_curve: LearningCurve
    memorisation: Memorisation
    noisy_labels: tuple[NoisyLabels, ...]
    gallery: tuple[GalleryImage, ...]
    remedies: Remedies
    wall_seconds: float
    class_names: tuple[str, ...] = ()
    folder: Path | None = None
    verdict: str = field(default="")
    label_check: LabelCheck | None = None  # None without the labels extra (cleanlab)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["folder"] = str(self.folder) if self.folder else None
        finite: dict[str, Any] = _finite_json(out)
        return finite


def _finite_json(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_json(v) for v in value]
    return value
