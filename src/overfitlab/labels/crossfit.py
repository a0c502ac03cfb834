"""Out-of-fold probabilities over every labelled image: each image is scored by models that never
trained on it (cross-fitting over all splits together, folds stratified and seeded).

Folds are streamed: one model and one fold's data at a time, each fold's probabilities written to
its own file as soon as it is done, so that a resumed search redoes nothing finished and memory
stays at one model. What makes the probabilities rank well, each an option measured by
``benchmarks.label_issues``: the softmax averaged over the last epochs (a snapshot ensemble at no
extra training) and over shifted copies of each image (test-time augmentation)."""

from __future__ import annotations

import io
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import store
from ..config import Config
from ..data.batches import Scaling
from ..data.dataset import DataSet
from ..data.split import Split
from ..training.callbacks import Callback, Fit

FOLD_FILE = "fold-{k}.npz"
VALID_IMAGES = 500  # the training loop's own valid split per fold: a sample of the held-out fold


@dataclass(frozen=True)
class Pool:
    """Every labelled image of a data set, each with its split and its position there."""

    images: torch.Tensor  # (N, C, H, W) uint8
    labels: torch.Tensor  # (N,)
    splits: np.ndarray  # (N,) "train" | "valid" | "test"
    indices: np.ndarray  # (N,) position in its split
    classes: int
    class_names: tuple[str, ...]
    name: str

    @classmethod
    def of(cls, data: DataSet) -> Pool:
        parts = [("train", data.train), ("valid", data.valid)]
        if data.test is not None:
            parts.append(("test", data.test))
        return cls(
            torch.cat([split.images for _, split in parts]),
            torch.cat([split.labels for _, split in parts]),
            np.concatenate([np.full(len(split), name) for name, split in parts]),
            np.concatenate([np.arange(len(split)) for _, split in parts]),
            data.classes,
            tuple(data.class_names or (str(k) for k in range(data.classes))),
            data.name,
        )

    def __len__(self) -> int:
        return len(self.labels)


def fold_of(labels: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """Each image's fold: within each class, a seeded shuffle dealt round the folds (stratified)."""
    rng = np.random.default_rng(seed)
    out = np.empty(len(labels), dtype=np.int64)
    start = 0
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        rng.shuffle(members)
        # Dealt from where the last class left off: the folds' sizes differ by one at most.
        out[members] = (start + np.arange(len(members))) % folds
        start = (start + len(members)) % folds
    return out


def shifted(images: torch.Tensor, pixels: int) -> list[torch.Tensor]:
    """The images and four copies moved by ``pixels`` up, down, left and right."""
    return [images, *(torch.roll(images, pixels * s, dims=d) for d in (2, 3) for s in (1, -1))]


@torch.inference_mode()
def predict(
    model: torch.nn.Module, images: torch.Tensor, scaling: Scaling, tta: bool, batch: int = 1000
) -> np.ndarray:
    """Softmax probabilities (N, K) of uint8 images, averaged over shifted copies with ``tta``."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    # One pixel on 28×28, as much on larger images; none on images under 14 pixels (a pixel of
    # the 8×8 digits is an eighth of a stroke's length, no harmless shift).
    pixels = round(images.shape[-1] / 28)
    tta = tta and pixels > 0
    out = []
    for start in range(0, len(images), batch):
        chunk = images[start : start + batch]
        copies = shifted(chunk, pixels) if tta else [chunk]
        softmax = [torch.softmax(model(scaling(copy).to(device)).float(), 1).cpu() for copy in copies]
        out.append(torch.stack(softmax).mean(0).numpy())
    model.train(was_training)
    return np.concatenate(out)


class EpochAverage(Callback):
    """The held-out images' probabilities averaged over the last ``last`` epochs of ``epochs``
    (a snapshot ensemble: the models the last epochs pass through, at no extra training)."""

    def __init__(self, images: torch.Tensor, scaling: Scaling, epochs: int, last: int, tta: bool) -> None:
        self.images, self.scaling, self.tta = images, scaling, tta
        self.first = max(1, epochs - last + 1)
        self.sum: np.ndarray | None = None
        self.count = 0

    def on_epoch_end(self, trainer: Fit, epoch: int, metrics: Mapping[str, float]) -> None:
        if epoch >= self.first:
            p = predict(trainer.model, self.images, self.scaling, self.tta)
            self.sum = p if self.sum is None else self.sum + p
            self.count += 1

    @property
    def probabilities(self) -> np.ndarray:
        if self.sum is None:
            raise RuntimeError("no epoch reached the averaged ones")
        out: np.ndarray = self.sum / self.count
        return out


def crossfit(
    config: Config,
    pool: Pool,
    folds: int,
    folder: Path | None,
    train: Callable[..., Any],
    last: int = 1,
    tta: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """Out-of-fold probabilities (N, K) for the pool: fold k's from a model trained on the
    others with ``config`` (its fold seed is the config's seed). With ``folder``, each fold's
    probabilities are kept there and read back instead of trained again."""
    labels = pool.labels.numpy()
    assignment = fold_of(labels, folds, config.seed)
    probabilities = np.zeros((len(pool), pool.classes), dtype=np.float32)
    for k in range(folds):
        held = np.flatnonzero(assignment == k)
        path = folder / FOLD_FILE.format(k=k) if folder is not None else None
        if path is not None and path.is_file():
            with np.load(path) as saved:
                if np.array_equal(saved["held"], held):
                    probabilities[held] = saved["probabilities"]
                    if progress is not None:
                        progress(k + 1, folds)
                    continue
        rest = torch.from_numpy(np.flatnonzero(assignment != k))
        held_t = torch.from_numpy(held)
        sample = held_t[
            torch.randperm(len(held_t), generator=torch.Generator().manual_seed(k))[:VALID_IMAGES]
        ]
        split = DataSet(
            pool.name,
            Split(pool.images[rest], pool.labels[rest]),
            Split(pool.images[sample], pool.labels[sample]),
            pool.classes,
            pool.class_names,
        )
        scaling = Scaling.fit(split.train.images) if config.normalize else Scaling()
        average = EpochAverage(pool.images[held_t], scaling, config.epochs, last, tta)
        train(config.replace(train_size=None, label_noise=0.0), data=split, callbacks=[average])
        probabilities[held] = average.probabilities
        if path is not None:
            buffer = io.BytesIO()
            np.savez(buffer, held=held, probabilities=average.probabilities)
            store.atomic_write(path, buffer.getvalue())
        del split, average
        if progress is not None:
            progress(k + 1, folds)
    return probabilities
