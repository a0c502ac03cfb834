"""Training: the trainer's loop, callbacks that observe it (early stopping, progress, live
curves, TensorBoard), weight penalties and the flat Adam."""

from .callbacks import Callback as Callback
from .early_stopping import EarlyStopping as EarlyStopping
from .early_stopping import StopReason as StopReason
from .live import LiveCurves as LiveCurves
from .regularizers import apply_max_norm as apply_max_norm
from .regularizers import l1_penalty as l1_penalty
from .regularizers import l2_penalty as l2_penalty
from .regularizers import param_groups as param_groups
from .trainer import Trainer as Trainer

__all__ = [
    "Callback",
    "EarlyStopping",
    "LiveCurves",
    "StopReason",
    "Trainer",
    "apply_max_norm",
    "l1_penalty",
    "l2_penalty",
    "param_groups",
]
