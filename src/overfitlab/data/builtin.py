"""The built-in data sets: scikit-learn's 8×8 digits (no download) and torchvision's MNIST family
and CIFAR-10, read from ``data_dir``."""

from __future__ import annotations

import importlib.util
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from ..catalog import BUILTIN
from ..errors import OverfitlabError, one_line
from ..store import removed_on_failure
from .dataset import DataSet
from .split import Split, stratified_indices

# The digits split is fixed whatever the run's seed, so every run is validated
# on the same 450 images.
DIGITS_VALID_FRACTION = 0.25
DIGITS_SPLIT_SEED = 0


def default_data_dir() -> Path:
    if os.environ.get("OVERFITLAB_DATA_DIR"):
        return Path(os.environ["OVERFITLAB_DATA_DIR"])
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "overfitlab" / "data"


# --------------------------------------------------------------------------- loading
def digits_file() -> Path:
    """scikit-learn's copy of the UCI digits: 1797 rows of 64 grey levels (0..16) and a label.

    Found without importing scikit-learn, whose import takes about a second
    (``sklearn.datasets.load_digits`` reads this same file).
    """
    spec = importlib.util.find_spec("sklearn")
    if spec is None or spec.origin is None:
        raise OverfitlabError("the built-in digits come with scikit-learn: pip install scikit-learn")
    return Path(spec.origin).parent / "datasets" / "data" / "digits.csv.gz"


def load_digits_split() -> DataSet:
    table = torch.from_numpy(np.loadtxt(digits_file(), delimiter=",", dtype=np.float64))
    # 0..16 grey levels → 0..255, so a batch is scaled by 1/255 like every other set.
    images = (table[:, :-1] * (255.0 / 16.0)).round().to(torch.uint8).reshape(-1, 1, 8, 8).contiguous()
    labels = table[:, -1].long()
    generator = torch.Generator().manual_seed(DIGITS_SPLIT_SEED)
    # Rounded up, as sklearn's train_test_split does: 1797 images → 450 valid, 1347 train.
    valid_size = math.ceil(len(labels) * DIGITS_VALID_FRACTION)
    valid_idx = stratified_indices(labels, valid_size, generator)
    is_train = torch.ones(len(labels), dtype=torch.bool)
    is_train[valid_idx] = False
    return DataSet(
        "digits",
        Split(images[is_train], labels[is_train]),
        Split(images[valid_idx], labels[valid_idx]),
        classes=10,
    )


class _VisionDataset(Protocol):
    """What is read of a torchvision data set (torchvision ships no types)."""

    data: Any  # uint8 images: a tensor (N, H, W) for the MNIST family, an array (N, H, W, C) for CIFAR
    targets: Any  # int labels: a tensor or a list
    classes: list[str]  # the class names, in label order


def _as_split(dataset: _VisionDataset) -> Split:
    images = torch.as_tensor(dataset.data)
    if images.dim() == 3:  # MNIST family: (N, H, W)
        images = images.unsqueeze(1)
    else:  # CIFAR: (N, H, W, C)
        images = images.permute(0, 3, 1, 2)
    return Split(images.contiguous().to(torch.uint8), torch.as_tensor(dataset.targets).long())


def load_torchvision(name: str, data_dir: str | os.PathLike[str] | None, download: bool) -> DataSet:
    import torchvision.datasets as dsets

    root = Path(data_dir) if data_dir else default_data_dir()
    if root.exists() and not root.is_dir():
        raise OverfitlabError(f"--data-dir {root} is a file, not a folder: pass the folder that holds {name}")
    class_name, folder = BUILTIN[name].torchvision, BUILTIN[name].folder
    assert class_name is not None and folder is not None, f"{name} is not a torchvision data set"
    cls = getattr(dsets, class_name)
    where = root / folder / ("raw" if name != "cifar10" else "")
    splits = []
    # A download that fails (no network) must not leave torchvision's empty folders behind.
    with removed_on_failure(where):
        opened = [
            _open_torchvision(cls, root, train, download, name, where, folder) for train in (True, False)
        ]
    for dataset in opened:
        try:
            splits.append(_as_split(dataset))
        except Exception as err:  # a header that parses into nonsense shapes
            raise OverfitlabError(
                f"{name} files under {where} are corrupt ({err}): delete them and download again"
            ) from None
    train_split, valid_split = splits
    _check_consistent(name, train_split, where)
    _check_consistent(name, valid_split, where)
    classes = int(train_split.labels.max()) + 1
    # torchvision's own class names ("T-shirt/top", "Trouser", ...): a gallery or a table then
    # says "given Shirt, predicted Coat" rather than "given 6, predicted 4".
    names = getattr(opened[0], "classes", None)
    class_names = tuple(str(n) for n in names) if names is not None and len(names) == classes else None
    return DataSet(name, train_split, valid_split, classes, class_names)


def _open_torchvision(
    cls: Callable[..., _VisionDataset],
    root: Path,
    train: bool,
    download: bool,
    name: str,
    where: Path,
    folder: str,
) -> _VisionDataset:
    """Open one split; missing files and unreadable files get different messages."""
    corrupt = f"{name} files under {where} are corrupt or truncated ({{}}): delete them and download again"
    try:
        return cls(root=str(root), train=train, download=False)
    except RuntimeError as err:
        # torchvision says "Dataset not found" when a file is missing; any other
        # RuntimeError comes from parsing a file that is there (a short IDX file).
        if "not found" not in str(err):
            raise OverfitlabError(corrupt.format(one_line(err))) from None
        if not download:
            raise OverfitlabError(
                f"{name} not found under {where} (downloading is off): put the official files "
                f"there, or pass --data-dir to the folder that holds {folder}/"
            ) from None
    except Exception as err:  # a damaged header fails torchvision's asserts and type checks
        raise OverfitlabError(corrupt.format(one_line(err))) from None
    try:
        return cls(root=str(root), train=train, download=True)
    except Exception as err:  # no network, a refused mirror, a bad checksum
        raise OverfitlabError(
            f"{name} not found under {where} and could not be downloaded ({one_line(err)}): put "
            f"the official files there, or pass --data-dir to the folder that holds {folder}/"
        ) from None


def _check_consistent(name: str, split: Split, where: Path) -> None:
    if len(split) == 0 or split.images.shape[0] != split.labels.shape[0]:
        raise OverfitlabError(
            f"{name} files under {where} are corrupt: {split.images.shape[0]} images but "
            f"{split.labels.shape[0]} labels; delete them and download again"
        )
