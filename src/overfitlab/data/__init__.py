"""Data sets: the types, the registry and its built-in sets, arrays and image folders, batches.

A data set enters through one seam: a name (registered, ``folder:PATH``, ``arrays:FILE.npz``)
for ``load_dataset``, or a ``DataSet`` built in Python (``DataSet.from_arrays``,
``DataSet.from_folder``, ``DataSet.from_torch``).
"""

from .batches import Scaling as Scaling
from .batches import prepare as prepare
from .dataset import DataSet as DataSet
from .registry import list_datasets as list_datasets
from .registry import load_dataset as load_dataset
from .registry import register_dataset as register_dataset
from .split import DataOptions as DataOptions
from .split import Split as Split

__all__ = [
    "DataOptions",
    "DataSet",
    "Scaling",
    "Split",
    "list_datasets",
    "load_dataset",
    "prepare",
    "register_dataset",
]
