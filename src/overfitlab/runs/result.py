"""``RunResult``: what a run returns and writes as its summary, and how every run ends."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import nn

from ..config import Config
from ..data.dataset import DataSet
from ..history import METRICS, History
from ..metrics import LABELS, outcome
from ..training.live import curves_png
from ..viz.html import box, image, table

if TYPE_CHECKING:
    from ..history import History


# --------------------------------------------------------------------------- results
@dataclass(frozen=True)
class DataInfo:
    """What a run trained and validated on, named in every output."""

    dataset: str
    train_images: int
    valid_images: int
    input_shape: tuple[int, int, int]  # (C, H, W): the parameter count of a CNN depends on it
    classes: int
    class_names: tuple[str, ...] | None = None

    @classmethod
    def of(cls, data: DataSet) -> DataInfo:
        return cls(
            data.name, len(data.train), len(data.valid), data.image_shape, data.classes, data.class_names
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "train_images": self.train_images,
            "valid_images": self.valid_images,
            "input_shape": list(self.input_shape),
            "classes": self.classes,
            "class_names": list(self.class_names) if self.class_names is not None else None,
        }


def shape_text(shape: Sequence[int]) -> str:
    return "×".join(str(side) for side in shape)


@dataclass
class RunResult:
    config: Config
    history: History
    model: nn.Module
    best_epoch: int | None
    stopped_epoch: int | None
    stop_reason: str
    stop_message: str
    params: int
    run_dir: Path | None
    data: DataInfo | None = None
    model_notes: tuple[str, ...] = ()  # what building the model adapted (factories.BuiltModel.notes)

    @property
    def train_seconds(self) -> float:
        seconds: float = sum(self.history.column("epoch_seconds"))
        return seconds

    @property
    def restored(self) -> bool:
        """Whether the model returned is the best epoch's (early stopping restored it)."""
        return bool(self.config.early_stopping and self.config.restore_best and self.best_epoch is not None)

    def __repr__(self) -> str:
        s = self.summary()

        def fmt(value: float | None) -> str:
            return "n/a" if value is None else f"{value:.4f}"

        data = f"{self.data.dataset}, " if self.data else ""
        return (
            f"RunResult({data}{s['epochs_run']} epochs, final valid acc {fmt(s['final_valid_acc'])}, "
            f"final gap {fmt(s['final_gap_acc'])}, {self.stop_reason}, run_dir={self.run_dir})"
        )

    def _repr_html_(self) -> str:
        return run_html(self)

    def summary(self) -> dict[str, Any]:
        """The final summary (``overfitlab train --json``); names as in :mod:`overfitlab.metrics`."""

        def metrics(epoch: int | None) -> dict[str, float | None] | None:
            if epoch is None:
                return None
            record = self.history.record_at(epoch)
            return {k: (record[k] if math.isfinite(record[k]) else None) for k in METRICS}

        last = self.history[-1]["epoch"] if len(self.history) else None
        numbers = outcome(self.history.epochs, self.best_epoch, self.restored)
        return {
            **numbers,
            "best": metrics(self.best_epoch),
            "last": metrics(last),
            "final": metrics(numbers["final_epoch"]),
            "stopped_epoch": self.stopped_epoch,
            "epochs_run": len(self.history),
            "stop_reason": self.stop_reason,
            "stop_message": self.stop_message,
            "train_seconds": round(self.train_seconds, 4),
            "params": self.params,
            "model": self.config.model,
            "model_notes": list(self.model_notes),
            **(self.data.to_dict() if self.data else {}),
            "run_dir": str(self.run_dir) if self.run_dir else None,
        }


def summary_text(summary: Mapping[str, Any]) -> str:
    """The summary for people: the same names as every other output (overfitlab.metrics)."""

    def fmt(value: Any) -> str:
        if value is None:
            return "n/a"
        return f"{value:.4f}" if isinstance(value, float) else str(value)

    best = summary.get("best") or {}
    rows: list[tuple[str, str]] = []
    if summary.get("dataset"):
        rows.append(
            (
                "data set",
                f"{summary['dataset']}: {summary['train_images']:,} training and "
                f"{summary['valid_images']:,} validation images of "
                f"{shape_text(summary['input_shape'])}, {summary['classes']} classes",
            )
        )
    rows += [
        ("epochs run", str(summary["epochs_run"])),
        (LABELS["best_epoch"], fmt(summary["best_epoch"])),
        ("valid acc at best epoch", fmt(best.get("valid_acc"))),
        ("valid loss at best epoch", fmt(best.get("valid_loss"))),
    ]
    rows += [
        (LABELS[key], fmt(summary.get(key)))
        for key in ("final_epoch", "final_valid_acc", "final_gap_acc", "peak_valid_acc", "lowest_valid_loss")
    ]
    reason = summary["stop_reason"]
    message = summary["stop_message"]
    parameters = f"{summary['params']:,}"
    if summary.get("input_shape"):
        parameters += f" (for {shape_text(summary['input_shape'])} inputs)"
    if summary.get("model"):
        notes = "; ".join(summary.get("model_notes") or ())
        rows.append(("model", summary["model"] + (f" ({notes})" if notes else "")))
    rows += [
        ("stop reason", reason + (f": {message}" if message else "")),
        ("train time", f"{summary['train_seconds']:.1f} s"),
        ("parameters", parameters),
        ("run folder", str(summary["run_dir"])),
    ]
    width = max(len(label) for label, _ in rows)
    return "\n".join(f"{label:<{width}}  {value}" for label, value in rows) + "\n"


def run_html(result: RunResult) -> str:
    summary = result.summary()
    rows: list[tuple[str, Any]] = []
    if result.data is not None:
        shape = "×".join(map(str, result.data.input_shape))
        rows.append(("data set", f"{result.data.dataset} ({result.data.train_images:,} train, {shape})"))
    rows += [("epochs run", summary["epochs_run"])]
    rows += [(LABELS[k], summary.get(k)) for k in ("best_epoch", "final_epoch", "final_valid_acc")]
    rows += [(LABELS[k], summary.get(k)) for k in ("final_gap_acc", "peak_valid_acc")]
    rows += [("stop reason", result.stop_reason), ("parameters", result.params)]
    if result.run_dir is not None:
        rows.append(("run folder", str(result.run_dir)))
    parts = [table(rows)]
    if len(result.history):
        png = curves_png(result.history, result.best_epoch, result.stopped_epoch)
        parts.append(image(png, "learning curves"))
    return box("run", *parts)
