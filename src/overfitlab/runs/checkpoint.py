"""The checkpoint format, written and read here only: ``best.pt`` and ``last.pt``, and the model
rebuilt from either."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import store
from ..config import Config, from_dict
from ..data.batches import Scaling
from ..errors import OverfitlabError
from .build import build_model, load_data

# 2: the model's reference and arguments, input shape, classes and their names, and the
# input scaling (format 1 had only the config and image shape; it still loads).
CHECKPOINT_FORMAT = 2


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
        )


def checkpoint_path(path: str | os.PathLike[str], which: str = "best") -> Path:
    path = Path(path)
    if path.is_dir():
        path = path / (store.BEST if which == "best" else store.LAST)
    return path


def read_saved(path: Path) -> tuple[dict[str, Any], SavedModel]:
    checkpoint = store.load_checkpoint(path)
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
        model = build_model(recipe, saved.image_shape, saved.classes).module
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
