"""Data sets held in memory as uint8 tensors; batches are seeded permutation slices.

Each split is one uint8 tensor of images (N, C, H, W) and one int64 tensor of
labels, loaded once. A batch is ``images[perm[i:i+b]]`` scaled by 1/255, the
same numbers ``transforms.ToTensor`` gives, without converting images one by
one. The built-in ``digits`` set (scikit-learn's 8×8 handwritten digits) needs
no download; the torchvision sets are read from ``data_dir``.

Every data set is resolved by one mechanism: a name registered with
``@register_dataset`` (the built-in ones are), or a prefix and a path:
``folder:PATH`` (image folders, ``overfitlab.folders``) and ``arrays:FILE.npz``
(Keras-style arrays, ``overfitlab.arrays``). In Python, ``DataSet.from_arrays``,
``DataSet.from_folder`` and ``DataSet.from_torch`` build one directly.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import math
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F

from .errors import OverfitlabError, did_you_mean, one_line
from .store import removed_on_failure

# The digits split is fixed whatever the run's seed, so every run is validated
# on the same 450 images.
DIGITS_VALID_FRACTION = 0.25
DIGITS_SPLIT_SEED = 0

_TORCHVISION = {
    "mnist": ("MNIST", "MNIST"),
    "fashion-mnist": ("FashionMNIST", "FashionMNIST"),
    "kmnist": ("KMNIST", "KMNIST"),
    "cifar10": ("CIFAR10", "cifar-10-batches-py"),
}


@dataclass
class Split:
    images: torch.Tensor  # uint8 (N, C, H, W)
    labels: torch.Tensor  # int64 (N,)

    def __len__(self) -> int:
        return self.labels.numel()

    def to(self, device: torch.device) -> Split:
        return Split(self.images.to(device), self.labels.to(device))


@dataclass
class DataSet:
    name: str
    train: Split
    valid: Split
    classes: int
    class_names: tuple[str, ...] | None = field(default=None)
    # A split no run trains or chooses on (a folder's test/ beside its valid/, an .npz's x_test
    # beside x_valid): the diagnosis judges its recommendation there; runs never read it.
    test: Split | None = field(default=None)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        _, channels, height, width = self.train.images.shape  # (N, C, H, W)
        return channels, height, width

    def with_train(self, train: Split) -> DataSet:
        return dataclasses.replace(self, train=train)

    @classmethod
    def from_arrays(
        cls,
        x_train: Any,
        y_train: Any,
        x_valid: Any,
        y_valid: Any,
        name: str = "arrays",
        class_names: Sequence[str] | None = None,
        x_test: Any = None,
        y_test: Any = None,
    ) -> DataSet:
        """Images as uint8 (N, H, W), (N, H, W, C) or (N, C, H, W), or floats in [0, 1];
        labels as integers 0..K-1 (numpy arrays, tensors or lists). ``x_test``/``y_test``: a
        test split no run trains or chooses on (``overfitlab.diagnose`` judges on it)."""
        from .arrays import from_arrays

        return from_arrays(x_train, y_train, x_valid, y_valid, name, class_names, x_test, y_test)

    @classmethod
    def from_folder(
        cls,
        path: str | os.PathLike[str],
        channels: int | None = None,
        image_size: int | tuple[int, int] | None = None,
        valid_fraction: float = 0.2,
        cache: bool = True,
    ) -> DataSet:
        """Image folders in ImageFolder's layout (see ``overfitlab.folders``)."""
        from .folders import load_folder

        size = (image_size, image_size) if isinstance(image_size, int) else image_size
        return load_folder(Path(path), DataOptions(None, True, channels, size, valid_fraction, cache))

    @classmethod
    def from_torch(cls, train: Any, valid: Any, name: str = "torch", classes: int | None = None) -> DataSet:
        """Any two map-style torch Datasets of (image tensor, label), materialised once as uint8."""
        from .arrays import from_torch

        return from_torch(train, valid, name, classes)


@dataclass(frozen=True)
class DataOptions:
    """How a data set is read: the Config's data fields that are not remedies."""

    data_dir: str | os.PathLike[str] | None = None
    download: bool = True
    channels: int | None = None
    image_size: tuple[int, int] | None = None
    valid_fraction: float = 0.2
    cache: bool = True


Loader = Callable[[DataOptions], DataSet]
_LOADERS: dict[str, Loader] = {}
PREFIXES = ("folder:", "arrays:")
PYTHON_PREFIX = "python:"  # the config's dataset for a DataSet given in Python


def register_dataset(name: str) -> Callable[[Loader], Loader]:
    """Register a data set: a function of DataOptions returning a DataSet (``--dataset name``).
    A data set registered in a script is known in that process only (like a model)."""

    def decorate(fn: Loader) -> Loader:
        if name in _LOADERS:
            raise ValueError(f"data set {name!r} registered twice")
        _LOADERS[name] = fn
        return fn

    return decorate


def list_datasets() -> list[str]:
    return list(_LOADERS)


def check_dataset_name(name: str) -> None:
    """A registered name, or a prefix with a path; else one line with the choices."""
    if name.startswith(PYTHON_PREFIX) and name[len(PYTHON_PREFIX) :]:
        return  # a DataSet given in Python (train(..., data=...)): valid, not loadable by name
    for prefix in PREFIXES:
        if name.startswith(prefix):
            if not name[len(prefix) :]:
                raise OverfitlabError(f"bad dataset {name!r}: write {prefix}PATH")
            return
    if name not in _LOADERS:
        raise OverfitlabError(
            f"unknown dataset {name!r}: {did_you_mean(name, _LOADERS)}choose one of "
            f"{', '.join(_LOADERS)}, folder:PATH or arrays:FILE.npz"
        )


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


def default_data_dir() -> Path:
    if os.environ.get("OVERFITLAB_DATA_DIR"):
        return Path(os.environ["OVERFITLAB_DATA_DIR"])
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "overfitlab" / "data"


# --------------------------------------------------------------------------- loading
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
    class_name, folder = _TORCHVISION[name]
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


def load_dataset(
    name: str,
    data_dir: str | os.PathLike[str] | None = None,
    download: bool = True,
    options: DataOptions | None = None,
) -> DataSet:
    """A data set by name (registered, ``folder:PATH`` or ``arrays:FILE.npz``)."""
    options = options or DataOptions(data_dir, download)
    check_dataset_name(name)
    if name.startswith(PYTHON_PREFIX):
        raise OverfitlabError(
            f"the data set {name} was given in Python, not by a name overfitlab can load: pass the "
            "same DataSet again (data=...), or --dataset"
        )
    if name.startswith("folder:"):
        from .folders import load_folder

        return load_folder(Path(name[len("folder:") :]).expanduser(), options)
    if name.startswith("arrays:"):
        from .arrays import load_npz

        return load_npz(Path(name[len("arrays:") :]).expanduser(), options)
    return _LOADERS[name](options)


def _torchvision_loader(name: str) -> Loader:
    def load(options: DataOptions) -> DataSet:
        return load_torchvision(name, options.data_dir, options.download)

    return load


def _digits_loader(options: DataOptions) -> DataSet:
    return load_digits_split()


register_dataset("digits")(_digits_loader)
for _name in _TORCHVISION:
    register_dataset(_name)(_torchvision_loader(_name))


# --------------------------------------------------------------------------- remedies on data
def subset(split: Split, size: int, generator: torch.Generator) -> Split:
    if size > len(split):
        raise OverfitlabError(
            f"train size {size} is larger than the {len(split)} training images: pass at most {len(split)}"
        )
    idx = stratified_indices(split.labels, size, generator)
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
