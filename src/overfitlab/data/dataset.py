"""``DataSet``: a named train, valid and optional test split, built from any source."""

from __future__ import annotations

import dataclasses
import io
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import store
from . import arrays, folders
from .split import DataOptions, Split


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
        test split no run trains or chooses on (``overfitlab.diagnosis`` judges on it)."""
        return cls(*arrays.from_arrays(x_train, y_train, x_valid, y_valid, name, class_names, x_test, y_test))

    @classmethod
    def from_folder(
        cls,
        path: str | os.PathLike[str],
        channels: int | None = None,
        image_size: int | tuple[int, int] | None = None,
        valid_fraction: float = 0.2,
        cache: bool = True,
    ) -> DataSet:
        """Image folders in ImageFolder's layout (see ``data.folders``)."""
        size = (image_size, image_size) if isinstance(image_size, int) else image_size
        return cls(
            *folders.load_folder(Path(path), DataOptions(None, True, channels, size, valid_fraction, cache))
        )

    @classmethod
    def from_torch(cls, train: Any, valid: Any, name: str = "torch", classes: int | None = None) -> DataSet:
        """Any two map-style torch Datasets of (image tensor, label), materialised once as uint8."""
        return cls(*arrays.from_torch(train, valid, name, classes))


def save_arrays(data: DataSet, folder: Path) -> None:
    """Write a DataSet as ``arrays:FOLDER`` reads it: one .npy per array, uint8 (N, C, H, W)."""
    folder.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, np.ndarray[Any, Any]] = {
        "x_train": data.train.images.numpy(),
        "y_train": data.train.labels.numpy(),
        "x_valid": data.valid.images.numpy(),
        "y_valid": data.valid.labels.numpy(),
    }
    if data.test is not None:
        arrays.update(x_test=data.test.images.numpy(), y_test=data.test.labels.numpy())
    if data.class_names is not None:
        arrays["class_names"] = np.array(data.class_names, dtype=str)
    for key, array in arrays.items():
        buffer = io.BytesIO()
        np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
        store.atomic_write(folder / f"{key}.npy", buffer.getvalue())
