"""Data sets by name: ``@register_dataset``, the ``folder:`` and ``arrays:`` prefixes, ``load_dataset``."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from ..catalog import BUILTIN, PREFIXES
from ..errors import OverfitlabError, did_you_mean
from . import arrays, folders
from .builtin import load_digits_split, load_torchvision
from .dataset import DataSet
from .split import DataOptions

Loader = Callable[[DataOptions], DataSet]
_LOADERS: dict[str, Loader] = {}
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
        return DataSet(*folders.load_folder(Path(name[len("folder:") :]).expanduser(), options))
    if name.startswith("arrays:"):
        return DataSet(*arrays.load_npz(Path(name[len("arrays:") :]).expanduser(), options))
    return _LOADERS[name](options)


def _torchvision_loader(name: str) -> Loader:
    def load(options: DataOptions) -> DataSet:
        return load_torchvision(name, options.data_dir, options.download)

    return load


def _digits_loader(options: DataOptions) -> DataSet:
    return load_digits_split()


for _name, _builtin in BUILTIN.items():
    register_dataset(_name)(_torchvision_loader(_name) if _builtin.torchvision else _digits_loader)
