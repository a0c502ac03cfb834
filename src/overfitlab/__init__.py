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

from .version import __version__ as __version__

# public name -> module that defines it
_EXPORTS = {
    "Callback": "training",
    "Config": "config",
    "load_toml": "config",
    "to_toml": "config",
    "DataOptions": "data",
    "DataSet": "data",
    "Split": "data",
    "load_dataset": "data",
    "register_dataset": "data",
    "Evaluation": "runs",
    "evaluate": "runs",
    "EarlyStopping": "training",
    "StopReason": "training",
    "OverfitlabError": "errors",
    "History": "history",
    "build_cnn": "models",
    "create_model": "models",
    "list_models": "models",
    "register_model": "models",
    "apply_max_norm": "training",
    "l1_penalty": "training",
    "l2_penalty": "training",
    "param_groups": "training",
    "RunResult": "runs",
    "Standardized": "runs",
    "load_model": "runs",
    "resume": "runs",
    "train": "runs",
    "ModelSummary": "models",
    "summarize": "models",
    "Trainer": "training",
    "LabelIssues": "labels",
    "find_issues": "labels",
    "find_label_issues": "labels",
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
    from .config import Config as Config
    from .config import load_toml as load_toml
    from .config import to_toml as to_toml
    from .data.dataset import DataSet as DataSet
    from .data.registry import load_dataset as load_dataset
    from .data.registry import register_dataset as register_dataset
    from .data.split import DataOptions as DataOptions
    from .data.split import Split as Split
    from .errors import OverfitlabError as OverfitlabError
    from .history import History as History
    from .labels.finder import find_label_issues as find_label_issues
    from .labels.issues import LabelIssues as LabelIssues
    from .labels.issues import find_issues as find_issues
    from .models.cnn import build_cnn as build_cnn
    from .models.factory import create_model as create_model
    from .models.registry import list_models as list_models
    from .models.registry import register_model as register_model
    from .models.summary import ModelSummary as ModelSummary
    from .models.summary import summarize as summarize
    from .runs.checkpoint import Standardized as Standardized
    from .runs.checkpoint import load_model as load_model
    from .runs.evaluation import Evaluation as Evaluation
    from .runs.evaluation import evaluate as evaluate
    from .runs.result import RunResult as RunResult
    from .runs.train import resume as resume
    from .runs.train import train as train
    from .training.callbacks import Callback as Callback
    from .training.early_stopping import EarlyStopping as EarlyStopping
    from .training.early_stopping import StopReason as StopReason
    from .training.regularizers import apply_max_norm as apply_max_norm
    from .training.regularizers import l1_penalty as l1_penalty
    from .training.regularizers import l2_penalty as l2_penalty
    from .training.regularizers import param_groups as param_groups
    from .training.trainer import Trainer as Trainer
