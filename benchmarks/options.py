"""What every benchmark is told: where the data is, how many repeats, which threads."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from .harness import REPO

MNIST_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


def default_data_root() -> Path:
    """$OVERFITLAB_DATA_DIR, else ../shared/data next to the repository, else overfitlab's cache."""
    if os.environ.get("OVERFITLAB_DATA_DIR"):
        return Path(os.environ["OVERFITLAB_DATA_DIR"])
    shared = REPO.parent / "shared" / "data"
    if shared.is_dir():
        return shared
    from overfitlab.data.builtin import default_data_dir

    return default_data_dir()


def has_mnist(root: Path) -> bool:
    raw = root / "MNIST" / "raw"
    return all((raw / name).is_file() or (raw / f"{name}.gz").is_file() for name in MNIST_FILES)


@dataclass
class Options:
    data_root: Path = field(default_factory=default_data_root)
    repeats: int = 3  # measured runs per contender
    warmup: int = 1  # short unmeasured runs per contender first
    threads: tuple[int, ...] = (2, 1)  # benchmark (a); the others use max(threads)
    device: str = "cpu"
    max_batches: int | None = None  # per epoch: smoke runs only (--quick)
    study_seeds: int = 1  # seeds of the remedies study in benchmark (c)
    study_epochs: int | None = None  # None: the preset's epochs
    frameworks: bool = True  # Lightning and Keras when installed
    timeout: float = 1800.0  # seconds, per process
    quick: bool = False

    @property
    def warmup_batches(self) -> int:
        return 20

    def quick_version(self) -> Options:
        """A smoke check of every code path in about two minutes: numbers are not comparable."""
        return Options(
            data_root=self.data_root,
            repeats=1,
            warmup=0,
            threads=self.threads[:1],
            device=self.device,
            max_batches=30,
            study_seeds=1,
            study_epochs=2,
            frameworks=self.frameworks,
            timeout=self.timeout,
            quick=True,
        )
