"""What a run does to its data: the training subset, label noise, input scaling, seeded batches
and augmentation."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..errors import OverfitlabError
from .dataset import DataSet
from .split import Split, stratified_indices


# --------------------------------------------------------------------------- remedies on data
def subset_positions(split: Split, size: int, generator: torch.Generator) -> torch.Tensor:
    """The positions of a stratified subset of ``size`` images (the generator's first draw)."""
    if size > len(split):
        raise OverfitlabError(
            f"train size {size} is larger than the {len(split)} training images: pass at most {len(split)}"
        )
    return stratified_indices(split.labels, size, generator)


def subset(split: Split, size: int, generator: torch.Generator) -> Split:
    idx = subset_positions(split, size, generator)
    return Split(split.images[idx], split.labels[idx])


def add_label_noise(split: Split, fraction: float, classes: int, generator: torch.Generator) -> Split:
    """Replace round(fraction·N) labels, chosen at random, by a random *other* class."""
    count = round(fraction * len(split))
    if count == 0:
        return split
    labels = split.labels.clone()
    idx = torch.randperm(len(split), generator=generator)[:count]
    shift = torch.randint(1, classes, (count,), generator=generator)
    labels[idx] = (labels[idx] + shift) % classes
    return Split(split.images, labels)


def prepare(dataset: DataSet, train_size: int | None, label_noise: float, seed: int) -> DataSet:
    """The run's training split: stratified subset, then label noise, both seeded."""
    generator = torch.Generator().manual_seed(seed)
    train = dataset.train
    if train_size is not None:
        train = subset(train, train_size, generator)
    if label_noise > 0:
        train = add_label_noise(train, label_noise, dataset.classes, generator)
    return dataset.with_train(train)


# --------------------------------------------------------------------------- batches
@dataclass(frozen=True)
class Scaling:
    """uint8 → float: x/255, then optionally (x - mean)/std."""

    mean: float = 0.0
    std: float = 1.0

    @classmethod
    def fit(cls, images: torch.Tensor) -> Scaling:
        x = images.double() / 255.0
        return cls(float(x.mean()), float(x.std()))

    @staticmethod
    def unit(images: torch.Tensor) -> torch.Tensor:
        """uint8 → float in [0, 1], bit for bit what ToTensor returns."""
        return images.float().div_(255.0)

    def standardize(self, x: torch.Tensor) -> torch.Tensor:
        if self.mean != 0.0 or self.std != 1.0:
            x = x.sub_(self.mean).div_(self.std)
        return x

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return self.standardize(self.unit(images))


def batch_count(n: int, batch_size: int, drop_last: bool) -> int:
    return n // batch_size if drop_last else math.ceil(n / batch_size)


def epoch_batches(n: int, batch_size: int, max_batches: int | None = None) -> int:
    """Batches in a training epoch: the full ones (drop_last, as the tutorial), at most
    ``max_batches``; one-line error when not even one is full."""
    batches = batch_count(n, batch_size, drop_last=True)
    if batches == 0:
        raise OverfitlabError(
            f"no full batch: {n} training images < batch size {batch_size}; pass a smaller --batch-size"
        )
    return batches if max_batches is None else min(batches, max_batches)


def train_batches(
    split: Split, batch_size: int, generator: torch.Generator, drop_last: bool = True
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Shuffled uint8 batches from one seeded permutation (drop_last as the tutorial)."""
    n = len(split)
    perm = torch.randperm(n, generator=generator).to(split.labels.device)
    for b in range(batch_count(n, batch_size, drop_last)):
        idx = perm[b * batch_size : (b + 1) * batch_size]
        yield split.images[idx], split.labels[idx]


def eval_batches(split: Split, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Every sample once, in order: validation metrics cover the whole split."""
    for start in range(0, len(split), batch_size):
        yield split.images[start : start + batch_size], split.labels[start : start + batch_size]


def augment(
    x: torch.Tensor, generator: torch.Generator, max_shift: float | None = None, max_degrees: float = 10.0
) -> torch.Tensor:
    """Random shift (±max_shift px) and rotation (±max_degrees) per image, one batched warp.

    The default shift is 1/14 of the image side: 2 px on 28×28 MNIST, but only
    0.57 px on the 8×8 digits, where 2 px would push strokes off the image.
    """
    n, _, h, w = x.shape
    if max_shift is None:
        max_shift = min(h, w) / 14
    draws = torch.rand(n, 3, generator=generator).to(x.device) * 2 - 1
    angle = draws[:, 0] * math.radians(max_degrees)
    cos, sin = torch.cos(angle), torch.sin(angle)
    # affine_grid works in [-1, 1] coordinates: a shift of s pixels is 2s/size.
    tx = draws[:, 1] * (2 * max_shift / w)
    ty = draws[:, 2] * (2 * max_shift / h)
    theta = torch.stack([torch.stack([cos, -sin, tx], 1), torch.stack([sin, cos, ty], 1)], 1)
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
