"""The diagnosis's verdict: its findings in a few sentences."""

from __future__ import annotations

import math

from .. import stats
from .results import MEMORISED, Diagnosis


def verdict(d: Diagnosis) -> str:
    """The answer in plain words with numbers: the report's first paragraph."""
    o = d.overfitting
    words = {"none": "Does not over-fit", "mild": "Over-fits mildly", "strong": "Over-fits strongly"}
    # "From epoch N" only where the valid loss has turned: its minimum, on every seed, is
    # followed by epochs that stay above it (else the curve is still falling at the end).
    turned = o.severity != "none" and len(o.stays_above_epoch.values) == o.turn_epoch.n
    turn = f" from epoch {o.turn_epoch.mean:.0f}" if turned else ""
    parts = [
        f"{words[o.severity]}{turn} (train {stats.fmt(o.train_acc.mean)}, "
        f"valid {stats.fmt(o.valid_acc.mean)}; final gap {o.gap_last.text()})."
    ]
    m = d.memorisation
    failed = [f"lr {lr:g} (train accuracy {best:.3f})" for lr, best in m.tries if best < MEMORISED]
    if m.epochs_to_memorise is not None and failed:
        parts.append(
            f"It does not fit random labels at {failed[0]}, but memorises them in "
            f"{m.epochs_to_memorise} epochs at lr {m.lr:g}."
        )
    elif m.epochs_to_memorise is not None:
        parts.append(f"It can memorise random labels in {m.epochs_to_memorise} epochs.")
    else:
        tries = m.tries or ((m.lr, max(m.train_acc, default=0.0)),)
        # Truncated, not rounded: 0.9895 must not read as the 0.99 it fell short of.
        reached = " and ".join(f"{math.floor(best * 1000) / 1000:.3f} at lr {lr:g}" for lr, best in tries)
        parts.append(
            f"Within {m.epochs} epochs it does not memorise random labels (train accuracy ≥ "
            f"{MEMORISED:g}): it reaches {reached}, valid at chance."
        )
    c = d.learning_curve
    if c.doubled is not None:
        parts.append(
            f"Twice the data is predicted to change valid accuracy by {stats.fmt(c.doubled.mean)} "
            f"[{stats.fmt(c.doubled.low)}, {stats.fmt(c.doubled.high)}]"
            + (f" ({c.warnings[0]})" if c.warnings else "")
            + "."
        )
    r = d.remedies
    if r.recommended:
        acc = next(x for x in r.table["remedies"] if x["variant"] == r.recommended)["differences"][
            stats.HEADLINE_METRIC
        ]
        parts.append(
            f"Of the remedies, {r.recommended} raises the returned model's valid accuracy most after "
            f"adjustment ({stats.fmt(acc['mean'])}, adjusted p = {stats.format_p(acc['p_adjusted'])})."
        )
        if r.recommended_test is not None:
            parts.append(
                f"Recommended: {r.recommended}; test accuracy {r.recommended_test.text()} against the "
                f"baseline's {r.baseline_test.text()}."
            )
    else:
        parts.append(
            "No remedy raises the returned model's valid accuracy beyond seed noise after adjusting for "
            f"the {len(r.table['remedies'])} compared; baseline test accuracy {r.baseline_test.text()}."
        )
    return " ".join(parts)
