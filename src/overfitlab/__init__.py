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
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS = {
    "Callback": "callbacks",
    "Config": "config",
    "load_toml": "config",
    "to_toml": "config",
    "DataSet": "data",
    "Split": "data",
    "load_dataset": "data",
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
    from .callbacks import Callback
    from .config import Config, load_toml, to_toml
    from .data import DataSet, Split, load_dataset
    from .early_stopping import EarlyStopping, StopReason
    from .errors import OverfitlabError
    from .history import History
    from .models import build_cnn, create_model, list_models, register_model
    from .regularizers import apply_max_norm, l1_penalty, l2_penalty, param_groups
    from .run import RunResult, load_model, resume, train
    from .summary import ModelSummary, summarize
    from .trainer import Trainer
