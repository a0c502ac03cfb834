"""A run's headline numbers: one definition for each name, computed here and only here.

Every output (``summary.txt``, ``summary.json``, ``train --json``, the run index,
``runs list|show|compare``, the study table and its report) takes these numbers
from :func:`outcome` and their labels from :data:`LABELS`, so one word means one
number everywhere:

- **best epoch**: the epoch the run judged best: early stopping's best epoch
  when it is on, else the epoch of the lowest valid loss.
- **final epoch**: the epoch of the model the run returns and saves as its
  result: the best epoch when early stopping restored it, else the last epoch.
- **final** train/valid loss and accuracy, and the **final gap** (train − valid
  accuracy; valid − train loss): the history at the final epoch.
- **peak valid acc** and **lowest valid loss**: the best values over all epochs,
  each possibly at a different epoch. They choose an epoch by looking at the
  validation set, an oracle no run returns: shown for reference, labelled so.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

# Column → label, for tables and text. The order is the order they are shown in.
LABELS = {
    "best_epoch": "best epoch",
    "final_epoch": "final epoch (model returned)",
    "final_train_acc": "final train acc",
    "final_valid_acc": "final valid acc",
    "final_train_loss": "final train loss",
    "final_valid_loss": "final valid loss",
    "final_gap_acc": "final gap (train − valid acc)",
    "final_gap_loss": "final gap (valid − train loss)",
    "peak_valid_acc": "peak valid acc (any epoch)",
    "lowest_valid_loss": "lowest valid loss (any epoch)",
}
# Short labels for narrow tables (the study's table, `runs list`).
SHORT_LABELS = {
    "final_valid_acc": "final valid acc",
    "final_gap_acc": "final gap",
    "peak_valid_acc": "peak valid acc",
    "lowest_valid_loss": "lowest valid loss",
}


def number(value: Any) -> float | None:
    """A finite number, else None (JSON has no NaN; a missing epoch has no value)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return value if math.isfinite(value) else None


def final_epoch(last_epoch: int | None, best_epoch: int | None, restored: bool) -> int | None:
    """The epoch of the model a run returns (see the module's docstring)."""
    return best_epoch if restored and best_epoch is not None else last_epoch


def outcome(epochs: Sequence[Mapping[str, Any]], best_epoch: int | None, restored: bool) -> dict[str, Any]:
    """The headline numbers of a history's epochs (dicts with ``epoch``, ``train_loss``,
    ``train_acc``, ``valid_loss``, ``valid_acc``): every key of :data:`LABELS`."""
    last = epochs[-1]["epoch"] if epochs else None
    final = final_epoch(last, best_epoch, restored)
    row = next((e for e in epochs if e["epoch"] == final), {})
    train_acc, valid_acc = number(row.get("train_acc")), number(row.get("valid_acc"))
    train_loss, valid_loss = number(row.get("train_loss")), number(row.get("valid_loss"))
    accs = [v for v in (number(e.get("valid_acc")) for e in epochs) if v is not None]
    losses = [v for v in (number(e.get("valid_loss")) for e in epochs) if v is not None]
    return {
        "best_epoch": best_epoch,
        "final_epoch": final,
        "final_train_acc": train_acc,
        "final_valid_acc": valid_acc,
        "final_train_loss": train_loss,
        "final_valid_loss": valid_loss,
        "final_gap_acc": None if train_acc is None or valid_acc is None else train_acc - valid_acc,
        "final_gap_loss": None if train_loss is None or valid_loss is None else valid_loss - train_loss,
        "peak_valid_acc": max(accs) if accs else None,
        "lowest_valid_loss": min(losses) if losses else None,
    }
