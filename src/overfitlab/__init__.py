"""overfitlab: see over-fitting in image classifiers and fight it, measured, side by side.

The Python API::

    from overfitlab import Config, train
    result = train(Config(train_size=300, epochs=60, early_stopping=True), "runs/demo")
    result.summary()["best"]["valid_acc"]
"""

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

__version__ = "0.1.0"

__all__ = [
    "Callback", "Config", "DataSet", "EarlyStopping", "History", "ModelSummary", "OverfitlabError",
    "RunResult", "Split", "StopReason", "Trainer", "apply_max_norm", "build_cnn", "create_model",
    "l1_penalty", "l2_penalty", "list_models", "load_dataset", "load_model", "load_toml",
    "param_groups", "register_model", "resume", "summarize", "to_toml", "train",
]
