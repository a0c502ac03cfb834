"""``overfitlab diagnose``: does the model over-fit, would more data help, which remedy, how sure.

One battery of runs on a recipe (the built-in remedies baseline by default, or any model
and data set), each part a function with a typed result, usable alone:

1. ``measure_overfitting``: the baseline over seeds: the gap at the best and at the last
   epoch with intervals, the epoch where the validation loss turns, a severity grade.
2. ``learning_curve``: final valid accuracy at growing training-set sizes, the power law
   err(n) = a·n^(−b) + c fitted (Hestness et al. 2017) and extrapolated to twice the data,
   with a bootstrap interval over seeds.
3. ``memorisation``: the recipe on randomly permuted training labels (Zhang et al. 2017):
   can it memorise its training set, and in how many epochs.
4. ``noisy_labels``: 20 % and 40 % of the training labels replaced: the best epoch's
   against the last epoch's valid accuracy (what early stopping saves).
5. ``memorised_images``: out-of-fold predictions over the training set (k folds): the
   training images most likely mislabelled or memorised.
6. ``remedies``: the remedies study, paired over seeds, Holm-adjusted (``overfitlab.stats``).
7. Test accuracy: the data set's own test split where it has one beside its validation
   split, else a stratified share carved from the training data before anything trains; the
   recommended recipe and the baseline are measured on it, data no choice saw.

The runs of parts 1, 2, 4 and 6 are one study (``overfitlab.study``, any backend), so the
baseline's runs serve all four; part 3's run and part 5's predictions are kept in the
diagnosis folder, so ``--resume`` finishes an interrupted diagnosis and redoes nothing done.
"""

from __future__ import annotations

import base64
import dataclasses
import io
import math
import os
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from . import stats, store
from .config import Config, apply_overrides
from .data import DataSet, Scaling, Split, stratified_indices
from .errors import OverfitlabError
from .history import History

DIAGNOSIS_JSON = "diagnosis.json"
REPORT = "diagnosis.html"
TEST_FRACTION = 0.2  # carved from the training data, stratified, before anything trains
TEST_SPLIT_SEED = 0
RANDOM_LABELS = "random-labels"  # part 3's run folder, in the diagnosis folder
OUT_OF_FOLD = "out-of-fold.npz"  # part 5's predictions, kept for --resume
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
EXTRAPOLATION_LIMIT = 4.0  # a fit predicts beyond 4× its largest size only with a warning


@dataclass(frozen=True)
class Budget:
    seeds: int
    sizes: tuple[float, ...]  # fractions of the recipe's training-set size
    folds: int
    noise: tuple[float, ...]
    gallery: int = 12


BUDGETS = {
    "quick": Budget(seeds=2, sizes=(0.25, 0.5, 0.75, 1.0), folds=3, noise=(0.4,)),
    "standard": Budget(seeds=3, sizes=(0.25, 0.4, 0.55, 0.75, 1.0), folds=3, noise=(0.2, 0.4)),
    "full": Budget(seeds=5, sizes=(0.2, 0.3, 0.4, 0.55, 0.7, 0.85, 1.0), folds=5, noise=(0.2, 0.4)),
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
    sizes: tuple[int, ...]
    train_acc: tuple[Interval, ...]
    valid_acc: tuple[Interval, ...]
    fit: dict[str, float] | None  # a, b, c of err(n) = a·n^−b + c, and r2
    doubled: Interval | None  # predicted valid accuracy gain at twice the largest size
    warnings: tuple[str, ...]


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
class GalleryImage:
    index: int  # in the training split the diagnosis used
    given: int
    predicted: int
    confidence: float  # the model's probability of its prediction
    loss: float  # out-of-fold loss of the given label
    png: str  # base64


@dataclass(frozen=True)
class Remedies:
    table: dict[str, Any]  # stats.comparisons_table
    recommended: str | None
    baseline_test: Interval
    recommended_test: Interval | None
    test_split: str = ""  # where the test images came from, in words


@dataclass
class Diagnosis:
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


# --------------------------------------------------------------------------- part 1
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


def learning_curve(
    sizes: Sequence[int],
    valid_acc: Sequence[Sequence[float]],
    train_acc: Sequence[Sequence[float]],
    seed: int = 0,
    resamples: int = 300,
) -> LearningCurve:
    """Per size, the seeds' final accuracies; the power law fitted to the mean errors, and its
    predicted gain in valid accuracy at twice the largest size over the accuracy measured there.

    The interval: the prediction ± t_{0.975, n−1} bootstrap standard errors, the bootstrap
    resampling the seeds at every size (a plain percentile interval over so few seeds covers
    the truth about three times in four where it claims 95 %; the simulation in the tests
    measures this one's coverage)."""
    sizes = [int(s) for s in sizes]
    means = [float(np.mean(v)) for v in valid_acc]
    fit = fit_power_law(sizes, [1 - m for m in means])
    warnings: list[str] = []
    doubled = None
    target = 2 * sizes[-1]
    if fit is None:
        warnings.append("the power law does not fit these points: no extrapolation")
    else:
        if fit["r2"] < 0.9:
            warnings.append(f"the power law fits poorly (R² {fit['r2']:.2f}): read its prediction with care")
        if target > EXTRAPOLATION_LIMIT * sizes[-1]:
            warnings.append(f"twice the data is beyond {EXTRAPOLATION_LIMIT:g}× the largest size measured")
        rng = np.random.default_rng(seed)
        start = (fit["a"], fit["b"], fit["c"])
        predictions = []
        for _ in range(resamples):
            resampled = [
                float(np.mean(rng.choice(np.asarray(v), size=len(v), replace=True))) for v in valid_acc
            ]
            refit = fit_power_law(sizes, [1 - m for m in resampled], start)
            if refit is not None:
                predictions.append(
                    1 - float(power_law(np.array([target]), refit["a"], refit["b"], refit["c"])[0])
                )
        point = 1 - float(power_law(np.array([target]), fit["a"], fit["b"], fit["c"])[0]) - means[-1]
        seeds = min(len(v) for v in valid_acc)
        if len(predictions) > 10 and seeds >= 2:
            half = stats.t_quantile(seeds) * float(np.std(predictions, ddof=1))
            doubled = Interval(point, point - half, point + half, seeds)
    return LearningCurve(
        tuple(sizes),
        tuple(Interval.of(v, "logit") for v in train_acc),
        tuple(Interval.of(v, "logit") for v in valid_acc),
        fit,
        doubled,
        tuple(warnings),
    )


# --------------------------------------------------------------------------- part 3
def permuted_labels(data: DataSet, seed: int) -> DataSet:
    """The training labels randomly permuted (the images kept): any pattern left is noise."""
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(data.train), generator=generator)
    return data.with_train(Split(data.train.images, data.train.labels[order]))


def memorise_recipe(config: Config, lr: float | None = None) -> Config:
    """The recipe for random labels: up to MEMORISE_EPOCHS × its epochs (memorising noise takes
    longer than learning), stopped once train accuracy reaches 0.99, no other early stopping;
    ``lr`` in place of the recipe's learning rate."""
    return config.replace(
        lr=config.lr if lr is None else lr,
        seed=0,
        label_noise=0.0,
        epochs=MEMORISE_EPOCHS * config.epochs,
        early_stopping=True,
        monitor="train_acc",
        mode="max",
        patience=10**6,
        min_delta=0.0,
        stopping_threshold=MEMORISED,
        restore_best=False,
        start_from_epoch=0,
        baseline=None,
        divergence_threshold=None,
    )


def memorisation(
    history: History, classes: int, lr: float = 0.0, tries: Sequence[tuple[float, float]] = ()
) -> Memorisation:
    train = tuple(float(e["train_acc"]) for e in history.epochs)
    valid = tuple(float(e["valid_acc"]) for e in history.epochs)
    reached = next((i + 1 for i, a in enumerate(train) if a >= MEMORISED), None)
    return Memorisation(len(train), train, valid, reached, 1 / classes, lr, tuple(tries))


# --------------------------------------------------------------------------- part 4
def noisy_labels(fraction: float, histories: Sequence[History]) -> NoisyLabels:
    best = [max(e["valid_acc"] for e in h.epochs) for h in histories]
    last = [_last(h, "valid_acc") for h in histories]
    return NoisyLabels(
        fraction,
        Interval.of(best, "logit"),
        Interval.of(last, "logit"),
        Interval.of([b - a for b, a in zip(best, last, strict=True)]),
    )


# --------------------------------------------------------------------------- part 5
def out_of_fold(
    config: Config, data: DataSet, folds: int, train: Callable[..., Any]
) -> tuple[np.ndarray, np.ndarray]:
    """Per training image: the out-of-fold probabilities (N, K), from ``folds`` models each
    trained on the other folds (stratified, seeded)."""
    n = len(data.train)
    generator = torch.Generator().manual_seed(config.seed)
    order = torch.randperm(n, generator=generator)
    fold_of = torch.empty(n, dtype=torch.long)
    fold_of[order] = torch.arange(n) % folds
    probabilities = np.zeros((n, data.classes))
    for k in range(folds):
        held = (fold_of == k).nonzero().flatten()
        rest = (fold_of != k).nonzero().flatten()
        split = DataSet(
            data.name,
            Split(data.train.images[rest], data.train.labels[rest]),
            Split(data.train.images[held], data.train.labels[held]),
            data.classes,
            data.class_names,
        )
        result = train(config.replace(train_size=None, label_noise=0.0), data=split)
        model = result.model.eval()
        scaling = Scaling.fit(split.train.images) if config.normalize else Scaling()
        with torch.inference_mode():
            logits = model(scaling(data.train.images[held]).contiguous())
        probabilities[held.numpy()] = torch.softmax(logits.float(), 1).numpy()
    return probabilities, data.train.labels.numpy()


def random_labels(config: Config, data: DataSet, folder: Path, train: Callable[..., Any]) -> Memorisation:
    """Part 3: the recipe on permuted labels, and when it does not memorise them, again at a
    tenth of its learning rate. A model that cannot fit noise at a learning rate too high for
    it says nothing of its capacity (Adam at 0.01 on 2,000 Fashion-MNIST images stays at
    chance); the verdict names both tries. Each run is a folder in the diagnosis folder; a
    finished one (a resumed diagnosis) is read back, an unfinished one trained again."""
    tries: list[tuple[float, float]] = []
    history = History()
    for lr in (config.lr, config.lr / 10):
        run_dir = folder / (RANDOM_LABELS if not tries else f"{RANDOM_LABELS}-lr{lr:g}")
        history = (
            _finished_history(run_dir)
            or train(memorise_recipe(config, lr), run_dir, data=permuted_labels(data, 0)).history
        )
        tries.append((lr, max(float(e["train_acc"]) for e in history.epochs)))
        if tries[-1][1] >= MEMORISED:
            break
    return memorisation(history, data.classes, tries[-1][0], tries)


def _finished_history(run_dir: Path) -> History | None:
    """A finished run's history; an unfinished run's folder is removed, to be trained again."""
    if (run_dir / store.SUMMARY_JSON).is_file() and (run_dir / store.HISTORY_JSON).is_file():
        return History.from_dict(store.read_json(run_dir / store.HISTORY_JSON))
    if run_dir.exists():
        shutil.rmtree(run_dir)
    return None


def _out_of_fold_saved(
    config: Config, data: DataSet, folds: int, train: Callable[..., Any], path: Path
) -> tuple[np.ndarray, np.ndarray]:
    """``out_of_fold``, its predictions kept in ``path`` (.npz) for a resumed diagnosis."""
    if path.is_file():
        with np.load(path) as saved:
            return saved["probabilities"], saved["labels"]
    probabilities, labels = out_of_fold(config, data, folds, train)
    buffer = io.BytesIO()
    np.savez(buffer, probabilities=probabilities, labels=labels)
    store.atomic_write(path, buffer.getvalue())
    return probabilities, labels


def memorised_images(
    images: torch.Tensor, probabilities: np.ndarray, labels: np.ndarray, k: int
) -> tuple[GalleryImage, ...]:
    """The k training images whose given label the out-of-fold models found least likely."""
    loss = -np.log(np.clip(probabilities[np.arange(len(labels)), labels], 1e-12, 1))
    top = np.argsort(-loss, kind="stable")[:k]
    return tuple(
        GalleryImage(
            int(i),
            int(labels[i]),
            int(probabilities[i].argmax()),
            float(probabilities[i].max()),
            float(loss[i]),
            _png(images[i]),
        )
        for i in top
    )


def _png(image: torch.Tensor) -> str:
    from PIL import Image

    pixels = image.numpy()
    picture = Image.fromarray(pixels[0] if pixels.shape[0] == 1 else pixels.transpose(1, 2, 0))
    if max(picture.size) < 96:  # small digits drawn large, pixels kept sharp
        factor = 96 // max(picture.size)
        picture = picture.resize((picture.width * factor, picture.height * factor), Image.Resampling.NEAREST)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


# --------------------------------------------------------------------------- the battery
class HeldOut(NamedTuple):
    data: DataSet  # what the battery trains and validates on
    test: Split  # what judges its recommendation, seen by no run
    source: str  # where the test images came from, in words


def carve_test(data: DataSet, fraction: float = TEST_FRACTION) -> HeldOut:
    """The data set's own test split where it has one beside its validation split (a folder's
    test/ beside valid/, an .npz's x_test beside x_valid); else a stratified share of the
    training images, fixed seed, held out before anything trains."""
    if data.test is not None:
        own = data.test
        return HeldOut(
            dataclasses.replace(data, test=None), own, f"the data set's own test split ({len(own)} images)"
        )
    generator = torch.Generator().manual_seed(TEST_SPLIT_SEED)
    size = max(data.classes, round(len(data.train) * fraction))
    test_idx = stratified_indices(data.train.labels, size, generator)
    keep = torch.ones(len(data.train), dtype=torch.bool)
    keep[test_idx] = False
    rest = Split(data.train.images[keep], data.train.labels[keep])
    test = Split(data.train.images[test_idx], data.train.labels[test_idx])
    return HeldOut(
        data.with_train(rest),
        test,
        f"{fraction:.0%} of the training images ({len(test)}), stratified and seeded, held out "
        "before anything trained",
    )


def check_budget(config: Config, data: DataSet, budget: Budget) -> int:
    """The largest training size; one line when the smallest size cannot train."""
    largest = config.train_size or len(data.train)
    if largest > len(data.train):
        raise OverfitlabError(
            f"train size {largest} is larger than the {len(data.train)} training images the battery "
            f"has (its test split held out): pass --train-size {len(data.train)} or less"
        )
    smallest = int(largest * min(budget.sizes))
    minimum = max(2 * config.batch_size, 2 * data.classes)
    if smallest < minimum:
        raise OverfitlabError(
            f"the learning curve's smallest size, {smallest} images ({min(budget.sizes):.0%} of {largest}), "
            f"is under {minimum} (two batches of {config.batch_size}): pass a larger --train-size "
            f"(at least {math.ceil(minimum / min(budget.sizes))}) or a smaller --batch-size"
        )
    return largest


def plan_variants(config: Config, budget: Budget, largest: int) -> list[tuple[str, dict[str, Any]]]:
    from .presets import ALL_REMEDIES, REMEDIES

    variants: list[tuple[str, dict[str, Any]]] = [("baseline", {})]
    variants += [
        (f"size-{int(largest * f)}", {"train_size": int(largest * f)}) for f in budget.sizes if f < 1
    ]
    variants += [(f"noise-{round(p * 100)}", {"label_noise": p}) for p in budget.noise]
    variants += [(name, overrides) for name, overrides in REMEDIES if name not in ("baseline", "more-data")]
    variants.append(("all-remedies", dict(ALL_REMEDIES)))
    return variants


def diagnose(
    overrides: Mapping[str, Any] | None = None,
    runs_dir: str | os.PathLike[str] = "runs",
    name: str | None = None,
    budget: str = "standard",
    backend: str = "local",
    workers: int | None = None,
    resume: bool = False,
    progress: Callable[[str, int, int], None] | None = None,
) -> Diagnosis:
    """Run the battery on the recipe (the remedies preset's baseline with ``overrides``) into
    ``runs_dir/name``: its study, diagnosis.json and diagnosis.html."""
    from .presets import REMEDIES_BASE
    from .run import data_options, train
    from .study import make_spec, run_study

    if budget not in BUDGETS:
        raise OverfitlabError(f"unknown budget {budget!r}: choose one of {', '.join(BUDGETS)}")
    plan = BUDGETS[budget]
    started = time.perf_counter()
    base = {**REMEDIES_BASE, **(overrides or {})}
    if "dataset" in (overrides or {}) and "train_size" not in (overrides or {}):
        # The preset's 300 images make the digits over-fit; a data set of one's own is diagnosed
        # on all of its training images unless --train-size says otherwise.
        base.pop("train_size")
    if "model" in (overrides or {}) and overrides and overrides["model"] != REMEDIES_BASE["model"]:
        from .factories import ARCHITECTURE_OPTIONS

        base = {k: v for k, v in base.items() if k not in ARCHITECTURE_OPTIONS or k in overrides}
    config = apply_overrides(Config(), base, "the diagnosed recipe")
    from .data import load_dataset

    full = load_dataset(config.dataset, options=data_options(config))
    data, test, test_source = carve_test(full)
    largest = check_budget(config, data, plan)
    name = store.check_name(name or store.generated_name("diagnosis"))
    folder = Path(runs_dir) / name
    if resume:
        saved = folder / "recipe.json"
        if not saved.is_file():
            raise OverfitlabError(f"no diagnosis {name} in {runs_dir} to resume: pass its name")
        before = store.read_json(saved)
        if before != {"recipe": base, "budget": budget}:
            raise OverfitlabError(
                f"diagnosis {name} was run with another recipe or budget: resume it without flags, "
                "or start a new one with --name"
            )
    elif folder.exists():
        raise OverfitlabError(f"{folder} already exists: pass --resume {name}, or another --name")
    spec = make_spec(base, plan_variants(config, plan, largest), plan.seeds, name=name, where="the diagnosis")
    with store.removed_on_failure(folder, keep=lambda: (folder / "recipe.json").is_file()):
        store.ensure_folder(folder, "diagnosis folder", "--runs-dir")
        store.write_json(folder / "recipe.json", {"recipe": base, "budget": budget})
    total = len(spec.variants) * plan.seeds + 1 + plan.folds

    def tell(part: str, done: int) -> None:
        if progress is not None:
            progress(part, done, total)

    counter = {"done": 0}

    def on_run(row: dict[str, Any], done: int, all_runs: int) -> None:
        counter["done"] = done
        tell("runs of parts 1, 2, 4 and 6 (baseline, sizes, noisy labels, remedies)", done)

    study = run_study(
        spec,
        folder,
        "study",
        backend=backend,
        workers=workers,
        resume=resume and (folder / "study" / "study.json").is_file(),
        progress=on_run,
        data=data,
    )
    by_variant: dict[str, list[dict[str, Any]]] = {}
    for row in study.runs:
        if row["status"] == "complete":
            by_variant.setdefault(row["variant"], []).append(row)

    def histories(variant: str) -> list[History]:
        return [
            History.from_dict(store.read_json(Path(r["run_dir"]) / store.HISTORY_JSON))
            for r in by_variant.get(variant, [])
        ]

    if not by_variant.get("baseline"):
        raise OverfitlabError(
            f"no baseline run completed in {folder / 'study'}: see its report for the errors"
        )
    overfitting = measure_overfitting(histories("baseline"))
    sized = sorted({int(largest * f) for f in plan.sizes})

    def finals(variant: str, key: str) -> list[float]:
        return [float(r[key]) for r in by_variant.get(variant, []) if r.get(key) is not None]

    size_variant = {
        int(largest * f): (f"size-{int(largest * f)}" if f < 1 else "baseline") for f in plan.sizes
    }
    curve = learning_curve(
        sized,
        [finals(size_variant[s], "final_valid_acc") for s in sized],
        [finals(size_variant[s], "final_train_acc") for s in sized],
    )
    tell("part 3: random labels", counter["done"] + 1)
    subset = _subset(data, config)  # parts 3 and 5 train on the recipe's training subset
    memorised = random_labels(config, subset, folder, train)
    noise = tuple(noisy_labels(p, histories(f"noise-{round(p * 100)}")) for p in plan.noise)
    tell("part 5: out-of-fold predictions", counter["done"] + 2)
    probabilities, labels = _out_of_fold_saved(config, subset, plan.folds, train, folder / OUT_OF_FOLD)
    gallery = memorised_images(subset.train.images, probabilities, labels, plan.gallery)

    # The remedies are one family for Holm's adjustment; the sizes and noise levels are not remedies.
    family = remedy_family([v.name for v in spec.variants], study.left_out)
    remedy_rows = [r for r in study.runs if r["variant"] in family]
    table = stats.comparisons_table(remedy_rows, family)
    recommended = _recommended(table)
    test_of = _test_accuracy(by_variant, test, data)
    remedies = Remedies(
        table,
        recommended,
        Interval.of(test_of("baseline"), "logit"),
        Interval.of(test_of(recommended), "logit") if recommended else None,
        test_source,
    )
    names = data.class_names or tuple(str(i) for i in range(data.classes))
    diagnosis = Diagnosis(
        base,
        budget,
        overfitting,
        curve,
        memorised,
        noise,
        gallery,
        remedies,
        time.perf_counter() - started,
        tuple(names),
        folder,
    )
    diagnosis.verdict = verdict(diagnosis)
    store.write_json(folder / DIAGNOSIS_JSON, diagnosis.to_dict())
    from .diagnosis_report import write_report

    write_report(diagnosis, folder / REPORT)
    return diagnosis


def remedy_family(variants: Sequence[str], left_out: Sequence[Mapping[str, str]]) -> list[str]:
    """The variants compared as one family for Holm's adjustment: the baseline and the remedies,
    not the sizes and noise levels (not remedies), nor the variants the model cannot take (never
    run: counting them would adjust for comparisons that were not made)."""
    never = {entry["variant"] for entry in left_out}
    return [v for v in variants if not v.startswith(("size-", "noise-")) and v not in never]


def _subset(data: DataSet, config: Config) -> DataSet:
    """The recipe's training subset (as its runs draw it, seed 0)."""
    from .data import prepare

    return prepare(data, config.train_size, 0.0, 0)


def _recommended(table: Mapping[str, Any]) -> str | None:
    """The remedy with the largest valid-accuracy gain that survives Holm's adjustment."""
    best, gain = None, 0.0
    for remedy in table["remedies"]:
        acc = remedy["differences"].get(stats.HEADLINE_METRIC) or {}
        adjusted, mean = acc.get("p_adjusted"), acc.get("mean")
        if adjusted is not None and adjusted < 0.05 and mean is not None and mean > gain:
            best, gain = remedy["variant"], mean
    return best


def _test_accuracy(
    by_variant: Mapping[str, list[dict[str, Any]]], test: Split, data: DataSet
) -> Callable[[str | None], list[float]]:
    from .evaluation import evaluate

    measured = DataSet("test split", test, test, data.classes, data.class_names)

    def accuracies(variant: str | None) -> list[float]:
        out = []
        for row in by_variant.get(variant or "", []):
            run_dir = Path(row["run_dir"])
            summary = store.read_json(run_dir / store.SUMMARY_JSON)
            # The model the run returns: the restored best epoch's, or the last epoch's.
            last = summary["final_epoch"] == summary["epochs_run"]
            out.append(evaluate(run_dir, data=measured, checkpoint="last" if last else "best").acc)
        return out

    return accuracies


# --------------------------------------------------------------------------- the verdict
def verdict(d: Diagnosis) -> str:
    """The answer in plain words with numbers: the report's first paragraph."""
    o = d.overfitting
    words = {"none": "Does not over-fit", "mild": "Over-fits mildly", "strong": "Over-fits strongly"}
    # "From epoch N" only where the valid loss has turned: its minimum, on every seed, is
    # followed by epochs that stay above it (else the curve is still falling at the end).
    turned = o.severity != "none" and len(o.stays_above_epoch.values) == o.turn_epoch.n
    turn = f" from epoch {o.turn_epoch.mean:.0f}" if turned else ""
    parts = [
        f"{words[o.severity]}{turn} (train {stats.fmt(o.train_acc.mean)}, "
        f"valid {stats.fmt(o.valid_acc.mean)}; final gap {o.gap_last.text()})."
    ]
    m = d.memorisation
    failed = [f"lr {lr:g} (train accuracy {best:.3f})" for lr, best in m.tries if best < MEMORISED]
    if m.epochs_to_memorise is not None and failed:
        parts.append(
            f"It does not fit random labels at {failed[0]}, but memorises them in "
            f"{m.epochs_to_memorise} epochs at lr {m.lr:g}."
        )
    elif m.epochs_to_memorise is not None:
        parts.append(f"It can memorise random labels in {m.epochs_to_memorise} epochs.")
    else:
        tries = m.tries or ((m.lr, max(m.train_acc, default=0.0)),)
        # Truncated, not rounded: 0.9895 must not read as the 0.99 it fell short of.
        reached = " and ".join(f"{math.floor(best * 1000) / 1000:.3f} at lr {lr:g}" for lr, best in tries)
        parts.append(
            f"Within {m.epochs} epochs it does not memorise random labels (train accuracy ≥ "
            f"{MEMORISED:g}): it reaches {reached}, valid at chance."
        )
    c = d.learning_curve
    if c.doubled is not None:
        parts.append(
            f"Twice the data is predicted to change valid accuracy by {stats.fmt(c.doubled.mean)} "
            f"[{stats.fmt(c.doubled.low)}, {stats.fmt(c.doubled.high)}]"
            + (f" ({c.warnings[0]})" if c.warnings else "")
            + "."
        )
    r = d.remedies
    if r.recommended:
        acc = next(x for x in r.table["remedies"] if x["variant"] == r.recommended)["differences"][
            stats.HEADLINE_METRIC
        ]
        parts.append(
            f"Of the remedies, {r.recommended} raises the returned model's valid accuracy most after "
            f"adjustment ({stats.fmt(acc['mean'])}, adjusted p = {stats.format_p(acc['p_adjusted'])})."
        )
        if r.recommended_test is not None:
            parts.append(
                f"Recommended: {r.recommended}; test accuracy {r.recommended_test.text()} against the "
                f"baseline's {r.baseline_test.text()}."
            )
    else:
        parts.append(
            "No remedy raises the returned model's valid accuracy beyond seed noise after adjusting for "
            f"the {len(r.table['remedies'])} compared; baseline test accuracy {r.baseline_test.text()}."
        )
    return " ".join(parts)
