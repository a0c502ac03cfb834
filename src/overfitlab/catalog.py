"""The built-in data sets by name: input shape, classes, and where torchvision keeps their files.

The one list of them: ``config`` names them in ``--help``, ``summary`` knows their shapes
without loading them, ``data`` registers a loader for each. Torch-free, so the command line
reads it without importing torch.
"""

from __future__ import annotations

from typing import NamedTuple


class Builtin(NamedTuple):
    shape: tuple[int, int, int]  # (C, H, W)
    classes: int
    torchvision: str | None  # its class in torchvision.datasets; None: scikit-learn's digits
    folder: str | None  # the folder torchvision keeps it in, under the data directory


BUILTIN: dict[str, Builtin] = {
    "digits": Builtin((1, 8, 8), 10, None, None),
    "mnist": Builtin((1, 28, 28), 10, "MNIST", "MNIST"),
    "fashion-mnist": Builtin((1, 28, 28), 10, "FashionMNIST", "FashionMNIST"),
    "kmnist": Builtin((1, 28, 28), 10, "KMNIST", "KMNIST"),
    "cifar10": Builtin((3, 32, 32), 10, "CIFAR10", "cifar-10-batches-py"),
}

# A data set named by a prefix and a path: image folders, and arrays in an .npz or .npy folder.
PREFIXES = ("folder:", "arrays:")
