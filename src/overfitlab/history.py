"""What happened in training: one dict per epoch, plus every batch's loss and accuracy.

Epoch records hold ``epoch`` (1-based, as the tutorial prints it),
``train_loss``, ``train_acc``, ``valid_loss``, ``valid_acc`` (sample-weighted
means), ``gap_acc`` (train − valid accuracy), ``gap_loss`` (valid − train
loss), ``train_penalty`` (the L1/L2 term, not included in ``train_loss`` so
train and valid losses compare), ``lr`` and timings.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterable, Mapping
from typing import Any

METRICS = ("train_loss", "train_acc", "valid_loss", "valid_acc")
# Every epoch record's columns, in order (trainer.epoch_record writes them): what early
# stopping can monitor.
EPOCH_COLUMNS = (
    "epoch",
    *METRICS,
    "gap_acc",
    "gap_loss",
    "train_penalty",
    "lr",
    "train_seconds",
    "valid_seconds",
    "epoch_seconds",
)


def _json_number(value: Any) -> Any:
    # JSON has no NaN: a diverged run's loss is written as null and read back as NaN.
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class History:
    def __init__(self, epochs: Iterable[Mapping[str, Any]] = (), batches: Iterable[Mapping[str, Any]] = ()):
        self.epochs: list[dict[str, Any]] = [dict(e) for e in epochs]
        self.batches: list[dict[str, Any]] = [dict(b) for b in batches]

    def __len__(self) -> int:
        return len(self.epochs)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.epochs[index]

    def add_epoch(self, record: Mapping[str, Any]) -> None:
        self.epochs.append(dict(record))

    def add_batches(self, epoch: int, losses: list[float], accs: list[float]) -> None:
        for batch, (loss, acc) in enumerate(zip(losses, accs, strict=True), start=1):
            self.batches.append({"epoch": epoch, "batch": batch, "loss": loss, "acc": acc})

    def column(self, name: str) -> list[Any]:
        return [record.get(name, math.nan) for record in self.epochs]

    def record_at(self, epoch: int) -> dict[str, Any]:
        for record in self.epochs:
            if record["epoch"] == epoch:
                return record
        raise KeyError(f"no epoch {epoch} in history (epochs 1..{len(self)})")

    def truncate(self, epochs: int) -> None:
        """Keep the first ``epochs`` epochs (resume drops a partial one)."""
        self.epochs = [e for e in self.epochs if e["epoch"] <= epochs]
        self.batches = [b for b in self.batches if b["epoch"] <= epochs]

    def best_epoch(self, monitor: str = "valid_loss", mode: str = "min") -> int | None:
        values: list[tuple[float, int]] = [
            (r[monitor], r["epoch"])
            for r in self.epochs
            if isinstance(r.get(monitor), (int, float)) and math.isfinite(r[monitor])
        ]
        if not values:
            return None
        sign = 1.0 if mode == "min" else -1.0
        return min(values, key=lambda pair: (sign * pair[0], pair[1]))[1]  # earliest on ties

    # ------------------------------------------------------------------ files
    def to_dict(self) -> dict[str, Any]:
        def clean(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
            return [{k: _json_number(v) for k, v in r.items()} for r in rows]

        return {"epochs": clean(self.epochs), "batches": clean(self.batches)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> History:
        def fix(rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
            return [{k: (math.nan if v is None else v) for k, v in r.items()} for r in rows]

        return cls(fix(data.get("epochs", [])), fix(data.get("batches", [])))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1)

    @classmethod
    def from_json(cls, text: str) -> History:
        return cls.from_dict(json.loads(text))

    def to_csv(self) -> str:
        """Epoch records as CSV (batches stay in the JSON file)."""
        out = io.StringIO()
        columns: list[str] = []
        for record in self.epochs:
            columns += [k for k in record if k not in columns]
        writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.epochs)
        return out.getvalue()
