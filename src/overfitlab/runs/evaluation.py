"""A saved model's loss and accuracy on a data set, fed exactly as in training.

``evaluate(run_dir)`` rebuilds the model of ``best.pt`` (or ``last.pt``) and measures it on
the run's own validation split, or on another compatible data set (same image shape and
classes), with the run's input scaling, validation batch size, memory layout and loss
(label smoothing included): on the run's own data it gives the validation numbers of that
epoch in ``history.csv``, bit for bit.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..config import data_options
from ..data.dataset import DataSet
from ..data.registry import load_dataset
from ..environment import resolve_device
from ..errors import OverfitlabError
from ..models.cnn import PRESETS
from ..training.trainer import evaluate_model
from .build import load_data, loss_function, memory_format_for
from .checkpoint import checkpoint_path, rebuild

SPLITS = ("valid", "train")


@dataclass(frozen=True)
class Evaluation:
    checkpoint: str  # the file measured
    epoch: int | None  # the epoch its weights are from
    dataset: str
    split: str
    images: int
    loss: float
    acc: float

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def __str__(self) -> str:
        epoch = f" (epoch {self.epoch})" if self.epoch is not None else ""
        return (
            f"{self.split} loss {self.loss:.4f}  {self.split} acc {self.acc:.4f}  on {self.dataset}, "
            f"{self.images:,} {self.split} images; model {self.checkpoint}{epoch}"
        )


def evaluate(
    run_dir: str | os.PathLike[str],
    dataset: str | None = None,
    data: DataSet | None = None,
    checkpoint: str = "best",
    split: str = "valid",
    data_dir: str | None = None,
) -> Evaluation:
    """Loss and accuracy of the run's saved model on ``split`` of its data set, of ``dataset``
    (a name as ``--dataset`` takes), or of ``data`` (a DataSet built in Python)."""
    if checkpoint not in ("best", "last"):
        raise OverfitlabError(f"unknown checkpoint {checkpoint!r}: choose best or last")
    if split not in SPLITS:
        raise OverfitlabError(f"unknown split {split!r}: choose one of {', '.join(SPLITS)}")
    path = Path(run_dir)
    if not path.is_dir():
        raise OverfitlabError(f"run folder {path} not found: pass a folder printed by `overfitlab train`")
    file = checkpoint_path(path, checkpoint)
    model, saved = rebuild(file)
    config = saved.config
    if data is None and dataset is None and config.dataset.startswith("python:"):
        raise OverfitlabError(
            f"{path} was trained on a data set given in Python ({config.dataset}): pass --dataset"
        )
    if data is None:
        if dataset is None:
            data = load_data(config)  # the run's own training subset, for split="train"
        else:
            changes: dict[str, Any] = {"dataset": dataset, "data_dir": data_dir}
            data = load_dataset(dataset, options=data_options(config.replace(**changes)))
    if data.image_shape != saved.image_shape or data.classes != saved.classes:
        raise OverfitlabError(
            f"{data.name} has {data.classes} classes of {'×'.join(map(str, data.image_shape))} images, the "
            f"model was trained on {saved.classes} of {'×'.join(map(str, saved.image_shape))}: pass a data "
            "set of the same shape (--image-size, --channels)"
        )
    device = resolve_device(config.device)
    model = model.to(device)
    own = saved.model in PRESETS
    memory_format = memory_format_for(config, device, own)
    model = model.to(memory_format=memory_format)
    chosen = (data.valid if split == "valid" else data.train).to(device)
    loss, acc = evaluate_model(
        model,
        chosen,
        loss_function(config.label_smoothing),
        config.valid_batch_size,
        saved.scaling,
        memory_format,
        device,
        torch.bfloat16 if config.bf16 else None,
    )
    return Evaluation(str(file), saved.epoch, data.name, split, len(chosen), loss, acc)
