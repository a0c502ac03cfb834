"""overfitlab: see over-fitting in image classifiers and fight it, measured, side by side.

The Python API::

    from overfitlab import Config, train
    result = train(Config(train_size=300, epochs=60, early_stopping=True), "runs/demo")
    result.summary()["best"]["valid_acc"]

Names are imported on first use (PEP 562): ``import overfitlab`` and the
command line start without torch, so ``overfitlab --help``, a bad flag and a
study's worker server do not wait two seconds for it.
"""

from __future__ import annotations

import importlib
import importlib.metadata as _metadata
from typing import TYPE_CHECKING, Any

try:  # one source of the version: pyproject.toml, as installed
    __version__ = _metadata.version("overfitlab")
except _metadata.PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "0+unknown"

# public name -> module that defines it
_EXPORTS = {
    "Callback": "callbacks",
    "Config": "config",
    "load_toml": "config",
    "to_toml": "config",
    "DataOptions": "data",
    "DataSet": "data",
    "Split": "data",
    "load_dataset": "data",
    "register_dataset": "data",
    "Evaluation": "evaluation",
    "evaluate": "evaluation",
    "EarlyStopping": "early_stopping",
    "StopReason": "early_stopping",
    "OverfitlabError": "errors",
    "History": "history",
    "build_cnn": "models",
    "create_model": "models",
    "list_models": "models",
    "register_model": "models",
    "apply_max_norm": "regularizers",
    "l1_penalty": "regularizers",
    "l2_penalty": "regularizers",
    "param_groups": "regularizers",
    "RunResult": "run",
    "Standardized": "run",
    "load_model": "run",
    "resume": "run",
    "train": "run",
    "ModelSummary": "summary",
    "summarize": "summary",
    "Trainer": "trainer",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'overfitlab' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value  # the next access skips this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:  # what type checkers and IDEs see
    from .callbacks import Callback as Callback
    from .config import Config as Config
    from .config import load_toml as load_toml
    from .config import to_toml as to_toml
    from .data import DataOptions as DataOptions
    from .data import DataSet as DataSet
    from .data import Split as Split
    from .data import load_dataset as load_dataset
    from .data import register_dataset as register_dataset
    from .early_stopping import EarlyStopping as EarlyStopping
    from .early_stopping import StopReason as StopReason
    from .errors import OverfitlabError as OverfitlabError
    from .evaluation import Evaluation as Evaluation
    from .evaluation import evaluate as evaluate
    from .history import History as History
    from .models import (
        build_cnn as build_cnn,
    )
    from .models import (
        create_model as create_model,
    )
    from .models import (
        list_models as list_models,
    )
    from .models import (
        register_model as register_model,
    )
    from .regularizers import (
        apply_max_norm as apply_max_norm,
    )
    from .regularizers import (
        l1_penalty as l1_penalty,
    )
    from .regularizers import (
        l2_penalty as l2_penalty,
    )
    from .regularizers import (
        param_groups as param_groups,
    )
    from .run import RunResult as RunResult
    from .run import Standardized as Standardized
    from .run import load_model as load_model
    from .run import resume as resume
    from .run import train as train
    from .summary import ModelSummary as ModelSummary
    from .summary import summarize as summarize
    from .trainer import Trainer as Trainer
