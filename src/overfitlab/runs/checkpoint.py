"""The checkpoint format, written and read here only: ``best.pt`` and ``last.pt``, and the model
rebuilt from either.

Every key, in one place (Lightning's checkpoint connector):

- both files: ``format`` (CHECKPOINT_FORMAT), ``model`` (the state dict), ``epoch`` (the
  epoch whose weights these are), ``config`` (the run's Config as a dict, None values left
  out), ``model_meta`` (the model's reference and arguments, input shape, classes, their
  names, the input scaling, the notes of its adaptation, ``input``: how images are fed to
  starting weights (``models.parts.InputAdaptation`` as a dict, or None), ``start``: where the
  starting weights came from (``models.weights.LoadReport`` as a dict, or None));
- ``last.pt`` also: ``optimizer`` (its state dict), ``early_stopping`` (its state dict or
  None), ``best_epoch`` and ``best_value`` (the recorder's best so far), ``rng_torch`` (torch's
  global generator: dropout masks), ``rng_generator`` (the trainer's: batch order and
  augmentation), ``history`` (every epoch and batch so far).
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import nn

from .. import store
from ..config import Config, from_dict, to_dict
from ..data.batches import Scaling
from ..errors import OverfitlabError
from ..history import History
from ..models.parts import InputAdaptation
from ..training.callbacks import Fit
from ..training.early_stopping import EarlyStopping
from ..training.trainer import Trainer
from .build import load_data, rebuild_model

# 2: the model's reference and arguments, input shape, classes and their names, and the
# input scaling (format 1 had only the config and image shape; it still loads).
# 3: model_meta's ``input`` and ``start`` (fine-tuning); a format 2 file has neither and loads.
CHECKPOINT_FORMAT = 3


def model_checkpoint(
    weights: Mapping[str, Any], epoch: int | None, config: Mapping[str, Any], model_meta: Mapping[str, Any]
) -> dict[str, Any]:
    """``best.pt``'s keys: the weights of one epoch and what rebuilds their model."""
    return {
        "format": CHECKPOINT_FORMAT,
        "model": weights,
        "epoch": epoch,
        "config": config,
        "model_meta": model_meta,
    }


def training_checkpoint(
    trainer: Fit,
    config: Config,
    model_meta: Mapping[str, Any],
    early_stopping: EarlyStopping | None,
    best_epoch: int | None,
    best_value: float,
) -> dict[str, Any]:
    """``last.pt``'s keys but the history: everything ``restore_training`` needs to go on."""
    recipe = {k: v for k, v in to_dict(config).items() if v is not None}
    return {
        **model_checkpoint(trainer.model.state_dict(), trainer.epoch, recipe, model_meta),
        "optimizer": trainer.optimizer.state_dict(),
        "early_stopping": early_stopping.state_dict() if early_stopping else None,
        "best_epoch": best_epoch,
        "best_value": best_value,
        "rng_torch": torch.get_rng_state(),
        "rng_generator": trainer.generator.get_state(),
    }


class Restored(NamedTuple):
    best_epoch: int | None
    best_value: float


def restore_training(
    checkpoint: Mapping[str, Any], trainer: Trainer, early_stopping: EarlyStopping | None
) -> Restored:
    """Put a trainer (and its early stopping) back where ``last.pt`` left them: weights,
    optimizer, history, epoch and both generators; the recorder's best comes back."""
    trainer.model.load_state_dict(checkpoint["model"])
    trainer.optimizer.load_state_dict(checkpoint["optimizer"])
    trainer.history = History.from_dict(checkpoint["history"])
    trainer.epoch = checkpoint["epoch"]
    trainer.history.truncate(trainer.epoch)
    if early_stopping is not None and checkpoint.get("early_stopping"):
        early_stopping.load_state_dict(checkpoint["early_stopping"])
    torch.set_rng_state(checkpoint["rng_torch"])
    trainer.generator.set_state(checkpoint["rng_generator"])
    return Restored(checkpoint.get("best_epoch"), checkpoint.get("best_value", math.inf))


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A checkpoint file's dict; one line for a missing or damaged file."""
    path = Path(path)
    if not path.is_file():
        raise OverfitlabError(f"checkpoint {path} not found: check the path")
    try:
        # Our checkpoints hold tensors, plain Python values and RNG byte tensors only.
        checkpoint: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=True)
        return checkpoint
    except Exception as err:  # torch raises many types for a damaged zip
        raise OverfitlabError(
            f"checkpoint {path} is corrupt or not an overfitlab checkpoint ({err})"
        ) from None


class Standardized(nn.Module):
    """A model trained with ``--normalize``: takes images in [0, 1] (ToTensor's scale) and
    standardizes them with the training set's mean and std before the model sees them."""

    def __init__(self, model: nn.Module, mean: float, std: float):
        super().__init__()
        self.model = model
        self.mean = mean
        self.std = std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.model((x - self.mean) / self.std)
        return out


@dataclass(frozen=True)
class SavedModel:
    """What a checkpoint says about its model (format 1 files are read into the same fields)."""

    config: Config
    model: str
    model_args: dict[str, Any]
    image_shape: tuple[int, int, int]
    classes: int
    class_names: tuple[str, ...] | None
    scaling: Scaling
    epoch: int | None
    adaptation: InputAdaptation | None = None  # images fed to starting weights (format 3)

    @classmethod
    def of(cls, checkpoint: Mapping[str, Any]) -> SavedModel:
        config = from_dict(checkpoint["config"])
        meta = checkpoint["model_meta"]
        names = meta.get("class_names")
        scaling = meta.get("scaling") or {}
        return cls(
            config,
            meta.get("model", config.model),
            dict(meta.get("model_args", config.model_args)),
            (int(meta["image_shape"][0]), int(meta["image_shape"][1]), int(meta["image_shape"][2])),
            int(meta["classes"]),
            tuple(names) if names is not None else None,
            # A format-1 checkpoint of a --normalize run did not save them: they are recomputed.
            Scaling(scaling.get("mean", 0.0), scaling.get("std", 1.0)),
            checkpoint.get("epoch"),
            InputAdaptation.from_dict(meta["input"]) if meta.get("input") else None,
        )


def checkpoint_path(path: str | os.PathLike[str], which: str = "best") -> Path:
    path = Path(path)
    if path.is_dir():
        path = path / (store.BEST if which == "best" else store.LAST)
    return path


def read_saved(path: Path) -> tuple[dict[str, Any], SavedModel]:
    checkpoint = load_checkpoint(path)
    saved = SavedModel.of(checkpoint)
    if saved.config.normalize and "scaling" not in checkpoint["model_meta"]:
        # Format 1 had no mean and std: the training set's, as the run computed them.
        data = load_data(saved.config)
        saved = dataclasses.replace(saved, scaling=Scaling.fit(data.train.images))
    return checkpoint, saved


def rebuild(file: Path, model: nn.Module | None = None) -> tuple[nn.Module, SavedModel]:
    """The checkpoint's model with its weights (train mode, no input scaling) and what it says."""
    state, saved = read_saved(file)
    if model is None:  # as the run built it: the checkpoint's reference and arguments
        recipe = dataclasses.replace(saved.config, model=saved.model, model_args=saved.model_args)
        model = rebuild_model(recipe, saved.image_shape, saved.classes, saved.adaptation).module
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as err:
        first = " ".join(str(err).split())[:300]
        raise OverfitlabError(
            f"the weights in {file} do not fit the model given ({first}): build the model of the run"
        ) from None
    return model, saved


def load_model(
    path: str | os.PathLike[str], model: nn.Module | None = None, checkpoint: str = "best"
) -> nn.Module:
    """The model saved in ``best.pt`` or ``last.pt`` (or a run folder: its ``checkpoint``), in
    eval mode, taking images as floats in [0, 1] (ToTensor's scale) whatever the run's
    ``--normalize``: a normalized run's model comes wrapped in ``Standardized``.

    The model is rebuilt from its reference (a user factory is imported), or, with ``model``,
    the weights are loaded into the module the caller built."""
    model, saved = rebuild(checkpoint_path(path, checkpoint), model)
    if saved.scaling != Scaling():
        model = Standardized(model, saved.scaling.mean, saved.scaling.std)
    return model.eval()
