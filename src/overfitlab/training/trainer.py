"""The training loop: fit a model, epoch by epoch; callbacks observe.

``Trainer`` knows nothing of configs, files or flags: it takes a model, an
optimizer and a few typed values. ``overfitlab.runs`` builds those from a
Config and persists what the trainer produces.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar, Protocol, TypedDict

import torch
import torch.nn.functional as F
from torch import nn

from ..data import batches as datalib
from ..data.batches import Scaling
from ..data.dataset import DataSet
from ..data.split import Split
from ..errors import OverfitlabError
from ..history import EPOCH_COLUMNS, History
from .callbacks import Callback
from .finetune import l2_sp_penalty
from .regularizers import apply_max_norm, l1_penalty, l2_penalty, tensor_sum


class Diverged(OverfitlabError):
    """Training produced a NaN or infinite loss."""


@dataclass
class Regularization:
    """Loss penalties and constraints applied at every step."""

    l1: float = 0.0
    l2: float = 0.0
    penalized: Sequence[torch.Tensor] = ()
    max_norm: float | None = None
    l2_sp: float = 0.0  # L2-SP: λΣ(w − w₀)² over the (w, w₀) of ``anchors``
    anchors: Sequence[tuple[torch.Tensor, torch.Tensor]] = ()

    def penalty(self) -> torch.Tensor | None:
        terms: list[torch.Tensor] = []
        # A frozen weight (fine-tuning) adds a constant: no gradient reaches it. (Not filtered by
        # requires_grad: stacked seeds' functional weights carry none.)
        if self.l1:
            terms.append(l1_penalty(self.penalized, self.l1))
        if self.l2:
            terms.append(l2_penalty(self.penalized, self.l2))
        if self.l2_sp:
            terms.append(l2_sp_penalty(self.anchors, self.l2_sp))
        return tensor_sum(terms) if terms else None


class LossFn(Protocol):
    """A loss of (outputs, labels), mean over the batch unless told otherwise, as
    ``F.cross_entropy``; ``evaluate`` asks for ``reduction="sum"``."""

    def __call__(
        self, outputs: torch.Tensor, labels: torch.Tensor, /, *, reduction: str = ...
    ) -> torch.Tensor: ...


class EpochResult(TypedDict):
    """What ``Trainer.train_epoch`` returns: sample-weighted means and per-batch lists."""

    train_loss: float
    train_acc: float
    train_penalty: float
    batch_loss: list[float]
    batch_acc: list[float]


def diverged_message(train_loss: float, epoch: int) -> str:
    return (
        f"training diverged: train loss is {train_loss} at epoch {epoch}; lower --lr, or add "
        "--early-stopping (with a loss as --monitor) to stop and keep the best epoch"
    )


def epoch_record(
    epoch: int,
    train_loss: float,
    train_acc: float,
    train_penalty: float,
    valid_loss: float,
    valid_acc: float,
    lr: float,
    train_seconds: float,
    valid_seconds: float,
    epoch_seconds: float,
) -> dict[str, float]:
    """One epoch's row of a History: the columns every run's history has, gaps derived."""
    return {
        "epoch": epoch,
        "train_loss": train_loss,
        "train_acc": train_acc,
        "valid_loss": valid_loss,
        "valid_acc": valid_acc,
        "gap_acc": train_acc - valid_acc,
        "gap_loss": valid_loss - train_loss,
        "train_penalty": train_penalty,
        "lr": lr,
        "train_seconds": train_seconds,
        "valid_seconds": valid_seconds,
        "epoch_seconds": epoch_seconds,
    }


@torch.inference_mode()
def evaluate_model(
    model: nn.Module,
    split: Split,
    loss_fn: LossFn = F.cross_entropy,
    batch_size: int = 250,
    scaling: Scaling | None = None,
    memory_format: torch.memory_format = torch.contiguous_format,
    device: torch.device | None = None,
    autocast_dtype: torch.dtype | None = None,
) -> tuple[float, float]:
    """Mean loss and accuracy of a model over every sample of a split, its inputs fed exactly
    as in training (scaled to [0, 1], standardized, in the memory format); needs no optimizer."""
    device = device or torch.device("cpu")
    scaling = scaling or Scaling()
    model.eval()
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    autocast = torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None)
    for images, labels in datalib.eval_batches(split, batch_size):
        with autocast:
            x = scaling.standardize(Scaling.unit(images)).contiguous(memory_format=memory_format)
            outputs = model(x)
            loss_sum += loss_fn(outputs, labels, reduction="sum").double()
        correct += (outputs.argmax(1) == labels).sum()
    return float(loss_sum) / len(split), int(correct) / len(split)


@dataclass
class Trainer:
    model: nn.Module
    optimizer: torch.optim.Optimizer
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    loss_fn: LossFn = F.cross_entropy
    regularization: Regularization = field(default_factory=Regularization)
    batch_size: int = 32
    valid_batch_size: int = 250
    scaling: Scaling = field(default_factory=Scaling)
    augment: bool = False
    memory_format: torch.memory_format = torch.contiguous_format
    callbacks: Sequence[Callback] = ()
    max_batches: int | None = None
    autocast_dtype: torch.dtype | None = None  # e.g. torch.bfloat16: forward and loss under autocast
    generator: torch.Generator = field(default_factory=torch.Generator)  # batch order, augmentation
    # The columns of every epoch record: what callbacks such as EarlyStopping can monitor.
    metric_names: ClassVar[tuple[str, ...]] = EPOCH_COLUMNS

    def __post_init__(self) -> None:
        self.history = History()
        self.should_stop = False
        self.epoch = 0  # epochs completed
        self.batches_per_epoch = 0

    # ------------------------------------------------------------------ one epoch
    def _inputs(self, images: torch.Tensor, train: bool) -> torch.Tensor:
        x = Scaling.unit(images)
        if train and self.augment:
            x = datalib.augment(x, self.generator)
        return self.scaling.standardize(x).contiguous(memory_format=self.memory_format)

    def _autocast(self) -> torch.autocast:
        return torch.autocast(
            self.device.type, dtype=self.autocast_dtype, enabled=self.autocast_dtype is not None
        )

    def train_epoch(self, split: Split) -> EpochResult:
        """One pass over shuffled batches; returns sample-weighted means and per-batch lists."""
        self.model.train()
        self.batches_per_epoch = datalib.epoch_batches(len(split), self.batch_size, self.max_batches)
        # Filled in place: one host sync per epoch, not per step. A list of per-step
        # scalar tensors would pin small blocks among each step's large ones and grow
        # the heap ~100 KB a step (an MNIST epoch: +300 MB resident).
        losses = torch.empty(self.batches_per_epoch, device=self.device)
        corrects = torch.empty(self.batches_per_epoch, dtype=torch.int64, device=self.device)
        sizes: list[int] = []
        penalty_sum = torch.zeros((), device=self.device)
        for batch, (images, labels) in enumerate(
            datalib.train_batches(split, self.batch_size, self.generator)
        ):
            if self.max_batches is not None and batch >= self.max_batches:
                break
            with self._autocast():
                outputs = self.model(self._inputs(images, train=True))
                loss = self.loss_fn(outputs, labels)
            penalty = self.regularization.penalty()
            objective = loss if penalty is None else loss + penalty
            self.optimizer.zero_grad(set_to_none=True)
            objective.backward()
            self.optimizer.step()
            if self.regularization.max_norm is not None:
                apply_max_norm(self.model, self.regularization.max_norm)
            losses[batch] = loss.detach()
            corrects[batch] = (outputs.detach().argmax(1) == labels).sum()
            sizes.append(labels.numel())
            if penalty is not None:
                penalty_sum += penalty.detach()
            for callback in self.callbacks:
                callback.on_batch_end(self, batch, loss)
        size = torch.tensor(sizes, dtype=torch.float64)
        batch_loss = losses[: len(sizes)].double().cpu()
        batch_correct = corrects[: len(sizes)].double().cpu()
        return {
            "train_loss": float((batch_loss * size).sum() / size.sum()),
            "train_acc": float(batch_correct.sum() / size.sum()),
            "train_penalty": float(penalty_sum) / len(sizes),
            "batch_loss": batch_loss.tolist(),
            "batch_acc": (batch_correct / size).tolist(),
        }

    def evaluate(self, split: Split) -> tuple[float, float]:
        """Mean loss and accuracy over every sample of the split."""
        return evaluate_model(
            self.model,
            split,
            self.loss_fn,
            self.valid_batch_size,
            self.scaling,
            self.memory_format,
            self.device,
            self.autocast_dtype,
        )

    # ------------------------------------------------------------------ fit
    def fit(self, data: DataSet, epochs: int) -> History:
        """Train up to ``epochs`` (total, counting epochs already in the history)."""
        train, valid = data.train.to(self.device), data.valid.to(self.device)
        self.should_stop = False
        try:
            for callback in self.callbacks:
                callback.on_fit_start(self)
            while self.epoch < epochs and not self.should_stop:
                epoch = self.epoch + 1
                for callback in self.callbacks:
                    callback.on_epoch_start(self, epoch)
                started = time.perf_counter()
                result = self.train_epoch(train)
                trained = time.perf_counter()
                valid_loss, valid_acc = self.evaluate(valid)
                ended = time.perf_counter()
                record = epoch_record(
                    epoch,
                    result["train_loss"],
                    result["train_acc"],
                    result["train_penalty"],
                    valid_loss,
                    valid_acc,
                    self.optimizer.param_groups[0]["lr"],
                    trained - started,
                    ended - trained,
                    ended - started,
                )
                self.history.add_epoch(record)
                self.history.add_batches(epoch, result["batch_loss"], result["batch_acc"])
                self.epoch = epoch
                for callback in self.callbacks:
                    callback.on_epoch_end(self, epoch, record)
                if not math.isfinite(record["train_loss"]) and not self.should_stop:
                    raise Diverged(diverged_message(record["train_loss"], epoch))
            for callback in self.callbacks:
                callback.on_fit_end(self)
        finally:
            for callback in self.callbacks:
                callback.on_teardown(self)
        return self.history
