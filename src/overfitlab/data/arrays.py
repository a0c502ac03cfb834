"""Data sets from arrays: an ``.npz`` file with Keras's names, numpy arrays, or torch Datasets.

``--dataset arrays:FILE.npz`` reads ``x_train``, ``y_train`` and ``x_test``/``y_test`` (or
``x_valid``/``y_valid``), as ``keras.datasets.mnist.load_data()`` returns them (with both,
``x_test`` is a test split no run trains or chooses on); ``arrays:FOLDER``
reads the same names as ``.npy`` files there, memory-mapped (``save_arrays`` writes one: a
study given a DataSet in Python hands it to its workers that way, read once by all); without a
test or valid pair, a stratified ``--valid-fraction`` of the training arrays is held out.
Images are uint8 in ``(N, H, W)``, ``(N, H, W, C)`` or ``(N, C, H, W)`` with C 1 or 3, or
floats in [0, 1], stored as ``round(255·x)`` (exact for the floats ToTensor makes). Labels are
integers 0..K-1; K is the largest label plus one, or the number of ``class_names``.
"""

from __future__ import annotations

import warnings
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import OverfitlabError
from .split import DataOptions, Split, Splits, check_fits, stratified_indices

TRAIN_KEYS = ("x_train", "y_train")
VALID_KEYS = (("x_test", "y_test"), ("x_valid", "y_valid"), ("x_val", "y_val"))
SPLIT_SEED = 0  # every run validates on the same held-out images, whatever its seed


def images_nchw(array: Any, what: str) -> torch.Tensor:
    """uint8 (N, C, H, W) from the accepted layouts and dtypes; one line when unusable."""
    x = np.asarray(array)
    if x.ndim == 3:
        x = x[:, None]
    elif x.ndim == 4:
        if x.shape[-1] in (1, 3) and x.shape[1] not in (1, 3):
            x = x.transpose(0, 3, 1, 2)  # HWC, as Keras and PIL give them
        elif x.shape[1] not in (1, 3):
            raise OverfitlabError(
                f"{what} has shape {list(x.shape)}: give (N, H, W), (N, H, W, C) or (N, C, H, W) "
                "with 1 or 3 channels"
            )
    else:
        raise OverfitlabError(
            f"{what} has shape {list(x.shape)}: give (N, H, W), (N, H, W, C) or (N, C, H, W) images"
        )
    if x.shape[0] == 0:
        raise OverfitlabError(f"{what} holds no image")
    if x.dtype == np.uint8:
        pass
    elif np.issubdtype(x.dtype, np.floating):
        if not np.isfinite(x).all() or x.min() < 0 or x.max() > 1:
            raise OverfitlabError(
                f"{what} holds floats outside [0, 1] (min {np.nanmin(x):g}, max {np.nanmax(x):g}): "
                "give uint8 images or floats in [0, 1]"
            )
        x = np.rint(x * 255.0).astype(np.uint8)
    elif np.issubdtype(x.dtype, np.integer) and x.min() >= 0 and x.max() <= 255:
        x = x.astype(np.uint8)
    else:
        raise OverfitlabError(f"{what} has dtype {x.dtype}: give uint8 images or floats in [0, 1]")
    x = np.ascontiguousarray(x)
    if x.flags.writeable:
        return torch.from_numpy(x)
    # Read-only arrays (np.frombuffer, a memory map the workers of a study share) are shared,
    # not copied: nothing writes to images in place (scaling makes new tensors), so torch's
    # warning about writing to them says nothing to the user.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(x)


def labels_of(array: Any, count: int, what: str) -> torch.Tensor:
    y = np.asarray(array)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]  # Keras's CIFAR labels are (N, 1)
    if y.ndim != 1 or not (np.issubdtype(y.dtype, np.integer) or y.dtype == np.bool_):
        raise OverfitlabError(
            f"{what} must be one integer label per image, got shape {list(y.shape)} of {y.dtype}"
        )
    if y.shape[0] != count:
        raise OverfitlabError(f"{what} has {y.shape[0]:,} labels for {count:,} images: give one per image")
    if y.size and y.min() < 0:
        raise OverfitlabError(f"{what} holds the label {int(y.min())}: labels are class numbers 0..K-1")
    return torch.from_numpy(y.astype(np.int64))


def from_arrays(
    x_train: Any,
    y_train: Any,
    x_valid: Any,
    y_valid: Any,
    name: str = "arrays",
    class_names: Sequence[str] | None = None,
    x_test: Any = None,
    y_test: Any = None,
) -> Splits:
    train_images = images_nchw(x_train, "x_train")
    train = Split(train_images, labels_of(y_train, len(train_images), "y_train"))
    valid = _split_like(train_images, x_valid, y_valid, "valid", "validation")
    test = _split_like(train_images, x_test, y_test, "test", "test") if x_test is not None else None
    return _checked(name, train, valid, class_names, test)


def _split_like(train_images: torch.Tensor, x: Any, y: Any, key: str, what: str) -> Split:
    images = images_nchw(x, f"x_{key}")
    if train_images.shape[1:] != images.shape[1:]:
        raise OverfitlabError(
            f"training images are {list(train_images.shape[1:])} (C, H, W) but {what} images "
            f"{list(images.shape[1:])}: give every split the same shape"
        )
    if y is None:
        raise OverfitlabError(f"x_{key} has no labels: pass y_{key} too")
    return Split(images, labels_of(y, len(images), f"y_{key}"))


def _checked(
    name: str, train: Split, valid: Split, class_names: Sequence[str] | None, test: Split | None = None
) -> Splits:
    largest = int(train.labels.max())
    classes = len(class_names) if class_names is not None else largest + 1
    checked = ((train, "y_train"), (valid, "y_valid")) + (((test, "y_test"),) if test is not None else ())
    for split, what in checked:
        top = int(split.labels.max())
        if top >= classes:
            raise OverfitlabError(
                f"{what} holds the label {top}, out of range for {classes} classes "
                f"({'the class names' if class_names is not None else 'the training labels'} "
                f"give 0..{classes - 1}): fix the labels"
            )
    if classes < 2:
        raise OverfitlabError(f"{name} has {classes} class: a classifier needs at least 2")
    names = tuple(class_names) if class_names is not None else None
    return Splits(name, train, valid, classes, names, test)


def held_out_indices(labels: torch.Tensor, fraction: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(train, valid) indices: a stratified, seeded validation share, the same for every run."""
    generator = torch.Generator().manual_seed(SPLIT_SEED)
    size = min(max(1, round(len(labels) * fraction)), len(labels) - 1)
    valid_idx = stratified_indices(labels, size, generator)
    is_train = torch.ones(len(labels), dtype=torch.bool)
    is_train[valid_idx] = False
    return is_train.nonzero().flatten(), valid_idx


def held_out(images: torch.Tensor, labels: torch.Tensor, fraction: float) -> tuple[Split, Split]:
    train_idx, valid_idx = held_out_indices(labels, fraction)
    return Split(images[train_idx], labels[train_idx]), Split(images[valid_idx], labels[valid_idx])


def _read_folder(path: Path) -> dict[str, Any]:
    arrays = {}
    for file in sorted(path.glob("*.npy")):
        try:
            # Copy-on-write maps: processes reading the same folder share its pages.
            arrays[file.stem] = np.load(file, mmap_mode="c", allow_pickle=False)
        except (OSError, ValueError) as err:
            raise OverfitlabError(
                f"cannot read {file} ({type(err).__name__}: {err}): save it again"
            ) from None
    return arrays


def load_npz(path: Path, options: DataOptions) -> Splits:
    """``--dataset arrays:FILE.npz`` or ``arrays:FOLDER`` (of .npy files)."""
    if path.is_dir():
        arrays = _read_folder(path)
    elif not path.is_file():
        raise OverfitlabError(f"arrays file {path} not found: pass an .npz file with x_train and y_train")
    else:
        try:
            with np.load(path, allow_pickle=False) as npz:
                arrays = {key: npz[key] for key in npz.files}
        except (OSError, ValueError, zipfile.BadZipFile, EOFError) as err:
            raise OverfitlabError(
                f"cannot read {path} as .npz ({type(err).__name__}: {err}): save it with numpy.savez"
            ) from None
    missing = [key for key in TRAIN_KEYS if key not in arrays]
    if missing:
        raise OverfitlabError(
            f"{path} has no {' and no '.join(missing)} (it holds {', '.join(arrays) or 'nothing'}): "
            "save x_train, y_train and x_test, y_test (Keras's names)"
        )
    present = [(x, y) for x, y in VALID_KEYS if x in arrays and y in arrays]
    # x_test validates when it is the only other split; beside x_valid or x_val it is the test split.
    valid = next((keys for keys in present if keys[0] != "x_test"), present[0] if present else None)
    test = (
        ("x_test", "y_test")
        if valid is not None and valid[0] != "x_test" and ("x_test", "y_test") in present
        else None
    )
    name = f"arrays:{path}"
    class_names = [str(c) for c in arrays["class_names"]] if "class_names" in arrays else None
    if valid is not None:
        return from_arrays(
            arrays["x_train"],
            arrays["y_train"],
            arrays[valid[0]],
            arrays[valid[1]],
            name,
            class_names,
            *((arrays[test[0]], arrays[test[1]]) if test else ()),
        )
    images = images_nchw(arrays["x_train"], "x_train")
    labels = labels_of(arrays["y_train"], len(images), "y_train")
    train, held = held_out(images, labels, options.valid_fraction)
    return _checked(name, train, held, class_names)


def from_torch(train: Any, valid: Any, name: str = "torch", classes: int | None = None) -> Splits:
    """Map-style torch Datasets of (image tensor, label), read once into uint8 tensors.

    Float images are taken as ToTensor's [0, 1] scale; the memory they will take is checked
    from the first image before any other is read."""
    splits = []
    for dataset, what in ((train, "train"), (valid, "valid")):
        try:
            count = len(dataset)
        except TypeError:
            raise OverfitlabError(
                f"the {what} data set has no length: give a map-style torch Dataset"
            ) from None
        if count == 0:
            raise OverfitlabError(f"the {what} data set is empty")
        first = images_nchw(_numpy(dataset[0][0])[None], f"{what} image 0")
        check_fits(count, first.shape[1:], f"the {what} data set")
        images = torch.empty((count, *first.shape[1:]), dtype=torch.uint8)
        labels = torch.empty(count, dtype=torch.int64)
        for i in range(count):
            image, label = dataset[i]
            x = images_nchw(_numpy(image)[None], f"{what} image {i}")
            if x.shape[1:] != images.shape[1:]:
                raise OverfitlabError(
                    f"{what} image {i} has shape {list(x.shape[1:])}, image 0 {list(images.shape[1:])}: "
                    "resize them to one size (e.g. transforms.Resize)"
                )
            images[i] = x[0]
            labels[i] = int(label)
        splits.append(Split(images, labels))
    given = getattr(train, "classes", None)  # torchvision's data sets name their classes
    if isinstance(given, (list, tuple)) and all(isinstance(c, str) for c in given):
        names: list[str] | None = list(given)
    else:
        names = [str(i) for i in range(classes)] if classes is not None else None
    return _checked(name, splits[0], splits[1], names)


def _numpy(image: Any) -> np.ndarray[Any, Any]:
    """A tensor (C, H, W), a PIL image or an array, as numpy (PIL gives (H, W[, C]))."""
    if isinstance(image, torch.Tensor):
        return image.detach().cpu().numpy()
    return np.asarray(image)
