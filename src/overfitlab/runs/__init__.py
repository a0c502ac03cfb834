"""Runs: one training run built from a Config, its folder (recorder, checkpoints, summary),
train and resume, a saved model loaded and evaluated, seeds trained stacked, MLflow tracking."""

from .checkpoint import Standardized as Standardized
from .checkpoint import load_model as load_model
from .evaluation import Evaluation as Evaluation
from .evaluation import evaluate as evaluate
from .result import RunResult as RunResult
from .train import resume as resume
from .train import train as train

__all__ = ["Evaluation", "RunResult", "Standardized", "evaluate", "load_model", "resume", "train"]
