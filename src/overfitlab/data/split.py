"""A split's images and labels as uint8 tensors, how a data set is read, and the checks and
stratified draws every source shares."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import torch

from ..errors import OverfitlabError


@dataclass
class Split:
    images: torch.Tensor  # uint8 (N, C, H, W)
    labels: torch.Tensor  # int64 (N,)

    def __len__(self) -> int:
        return self.labels.numel()

    def to(self, device: torch.device) -> Split:
        return Split(self.images.to(device), self.labels.to(device))


@dataclass(frozen=True)
class DataOptions:
    """How a data set is read: the Config's data fields that are not remedies."""

    data_dir: str | os.PathLike[str] | None = None
    download: bool = True
    channels: int | None = None
    image_size: tuple[int, int] | None = None
    valid_fraction: float = 0.2
    cache: bool = True


def available_memory() -> int | None:
    """Bytes of memory available to a new allocation (Linux's MemAvailable), if known."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def check_fits(count: int, shape: Sequence[int], what: str) -> None:
    """Refuse, in one line, a data set whose uint8 images would not fit in memory."""
    needed = count * math.prod(shape)
    available = available_memory()
    if available is not None and needed > 0.8 * available:
        raise OverfitlabError(
            f"{what}: {count:,} images of {'×'.join(map(str, shape))} need {needed / 2**30:.1f} GiB, "
            f"more than the {available / 2**30:.1f} GiB of memory available: use --image-size, "
            "--channels 1 or fewer images"
        )


def stratified_indices(labels: torch.Tensor, size: int, generator: torch.Generator) -> torch.Tensor:
    """``size`` indices with each class in proportion to its frequency (largest remainder)."""
    classes, counts = labels.unique(return_counts=True)
    exact = counts.double() * size / labels.numel()
    quota = exact.floor().long()
    shortfall = size - int(quota.sum())
    if shortfall:
        order = torch.argsort(exact - quota, descending=True, stable=True)
        quota[order[:shortfall]] += 1
    chosen = []
    for cls, take in zip(classes.tolist(), quota.tolist(), strict=True):
        members = (labels == cls).nonzero().flatten()
        chosen.append(members[torch.randperm(members.numel(), generator=generator)[:take]])
    return torch.cat(chosen).sort().values


class Splits(NamedTuple):
    """A data set's parts as a source reads them (arrays, a folder, torch Datasets):
    ``DataSet(*splits)`` makes the data set, so no source needs to know ``DataSet``."""

    name: str
    train: Split
    valid: Split
    classes: int
    class_names: tuple[str, ...] | None = None
    test: Split | None = None
