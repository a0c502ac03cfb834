"""The diagnosis's parts that train: random labels, out-of-fold losses; and the carved test split."""

from __future__ import annotations

import dataclasses
import io
import shutil
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from .. import store
from ..config import Config
from ..data.batches import Scaling, subset_positions
from ..data.dataset import DataSet
from ..data.split import Split, stratified_indices
from ..history import History
from ..runs.evaluation import evaluate
from ..viz.html import png_base64
from .results import (
    MEMORISE_EPOCHS,
    MEMORISED,
    RANDOM_LABELS,
    TEST_FRACTION,
    TEST_SPLIT_SEED,
    GalleryImage,
    Memorisation,
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
    images: torch.Tensor,
    probabilities: np.ndarray,
    labels: np.ndarray,
    k: int,
    positions: np.ndarray | None = None,
) -> tuple[GalleryImage, ...]:
    """The k training images whose given label the out-of-fold models found least likely, each
    named by ``positions`` (its place in the data set's train split; default: in ``images``)."""
    loss = -np.log(np.clip(probabilities[np.arange(len(labels)), labels], 1e-12, 1))
    top = np.argsort(-loss, kind="stable")[:k]
    where = np.arange(len(labels)) if positions is None else positions
    return tuple(
        GalleryImage(
            int(where[i]),
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
    return png_base64(buffer.getvalue())


class HeldOut(NamedTuple):
    data: DataSet  # what the battery trains and validates on
    test: Split  # what judges its recommendation, seen by no run
    source: str  # where the test images came from, in words
    kept: torch.Tensor  # each of data.train's images: its position in the data set's train split


def carve_test(data: DataSet, fraction: float = TEST_FRACTION) -> HeldOut:
    """The data set's own test split where it has one beside its validation split (a folder's
    test/ beside valid/, an .npz's x_test beside x_valid); else a stratified share of the
    training images, fixed seed, held out before anything trains."""
    if data.test is not None:
        own = data.test
        return HeldOut(
            dataclasses.replace(data, test=None),
            own,
            f"the data set's own test split ({len(own)} images)",
            torch.arange(len(data.train)),
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
        keep.nonzero().flatten(),
    )


def _subset(data: DataSet, config: Config) -> tuple[DataSet, torch.Tensor]:
    """The recipe's training subset (as its runs draw it, seed 0), and each of its images'
    position in ``data.train``."""
    if config.train_size is None:
        return data, torch.arange(len(data.train))
    # prepare's subset is the first draw of a generator seeded with the run's seed (0 here).
    positions = subset_positions(data.train, config.train_size, torch.Generator().manual_seed(0))
    return data.with_train(Split(data.train.images[positions], data.train.labels[positions])), positions


def _test_accuracy(
    by_variant: Mapping[str, list[dict[str, Any]]], test: Split, data: DataSet
) -> Callable[[str | None], list[float]]:

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
