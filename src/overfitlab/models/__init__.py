"""Models: the registry at the bottom, the tutorial's CNN family, the factory that builds any
model by reference (timm's ``create_model`` contract), fast dropout, and summaries."""

from . import cnn as _cnn  # registers the presets seed-cnn, seed-fc, seed-gap
from .cnn import build_cnn as build_cnn
from .factory import create_model as create_model
from .registry import count_parameters as count_parameters
from .registry import list_models as list_models
from .registry import register_model as register_model
from .summary import ModelSummary as ModelSummary
from .summary import summarize as summarize

del _cnn

__all__ = [
    "ModelSummary",
    "build_cnn",
    "count_parameters",
    "create_model",
    "list_models",
    "register_model",
    "summarize",
]
