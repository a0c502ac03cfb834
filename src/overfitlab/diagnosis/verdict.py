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
    parts.extend(remedy_sentences(d))
    return " ".join(parts)


def remedy_sentences(d: Diagnosis) -> list[str]:
    """Which remedy helps, hurts, changes nothing beyond the margin, or is undecided at this
    budget: judged by the returned model's held-out accuracy with simultaneous intervals."""
    r = d.remedies
    if not r.decisions:  # a diagnosis written before decisions: its table's words
        return [f"Baseline test accuracy {r.baseline_test.text()}."]
    by: dict[str, list[dict[str, object]]] = {}
    for decision in r.decisions:
        by.setdefault(str(decision["answer"]), []).append(decision)
    out = []
    if r.recommended is not None:
        best = by["helps"][0]
        effect = str(best["sentence"]).removeprefix("helps: ")
        out.append(f"Of the {len(r.decisions)} remedies, {best['variant']} helps most: {effect}.")
        others = [str(x["variant"]) for x in by["helps"][1:]]
        if others:
            out.append(f"Also helps: {', '.join(others)}.")
    else:
        out.append(f"None of the {len(r.decisions)} remedies is shown to help.")
    if by.get("hurts"):
        out.append(f"Hurts: {', '.join(str(x['variant']) for x in by['hurts'])}.")
    if by.get("no effect"):
        names = ", ".join(str(x["variant"]) for x in by["no effect"])
        out.append(f"No effect larger than ±{r.margin:g}: {names}.")
    if by.get("undecided"):
        undecided = [
            f"{x['variant']} (about {x['seeds_to_settle']} seeds in all)"
            if x["seeds_to_settle"]
            else str(x["variant"])
            for x in by["undecided"]
        ]
        out.append(f"Undecided at this budget: {', '.join(undecided)}.")
    if r.recommended is not None and r.recommended_test is not None:
        out.append(
            f"Recommended: {r.recommended}; test accuracy {r.recommended_test.text()} against the "
            f"baseline's {r.baseline_test.text()}."
        )
    else:
        out.append(f"Baseline test accuracy {r.baseline_test.text()}.")
    return out
