"""The diagnosis's verdict: its findings in a few sentences."""

from __future__ import annotations

import math

from .. import stats
from . import extrapolation
from .results import MEMORISED, Diagnosis, Interval, LearningCurve


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
    parts.extend(data_sentences(d.learning_curve, d.remedies.margin))
    parts.extend(remedy_sentences(d))
    return " ".join(parts)


def signed(value: float) -> str:
    return "–" if not math.isfinite(value) else f"{value:+.3f}".replace("-", "−")


def gain_text(gain: Interval) -> str:
    return f"{signed(gain.mean)} [{signed(gain.low)}, {signed(gain.high)}]"


def reading(gain: Interval, margin: float) -> str:
    """What an interval of gains says: helps, a little (helps, by less than the margin), hurts,
    flat (within ±margin both ways) or cannot tell."""
    if gain.low > 0:
        return "a little" if gain.high < margin else "helps"
    if gain.high < 0:
        return "hurts"
    if -margin <= gain.low and gain.high <= margin:
        return "flat"
    return "cannot tell"


def data_sentences(c: LearningCurve, margin: float) -> list[str]:
    """Would more data help: measured above the recipe's size where the data hold more images,
    extrapolated (and said so) only beyond the largest size measured."""
    out = []
    if c.measured:
        gains = " and by ".join(
            f"{gain_text(gain)} with {'all ' if size >= c.available else ''}{size:,}"
            for size, gain in zip(c.above, c.measured, strict=True)
        )
        seeds = min(g.n for g in c.measured)
        last = reading(c.measured[-1], margin)
        words = {
            "helps": "More data helps, measured",
            "a little": f"More data helps a little (by less than {margin:g}), measured",
            "hurts": "More data hurts, measured",
            "flat": f"More data changes valid accuracy by less than ±{margin:g}, measured",
            "cannot tell": "The measured sizes cannot tell whether more data helps",
        }[last]
        out.append(
            f"{words}: against the recipe's {c.recipe_size:,} training images, valid accuracy "
            f"changes by {gains} ({seeds} seeds each, paired)."
        )
    doubled = c.doubled
    if doubled is None:
        if c.warnings:
            out.append(f"No extrapolation beyond {c.sizes[-1]:,} images: {c.warnings[-1]}.")
        return out
    size, gain = doubled
    largest = c.sizes[-1]
    where = (
        "Beyond the data there is"
        if largest >= c.available
        else f"Beyond the {largest:,} images measured (of the {c.available:,} there are)"
    )
    tail = {
        "helps": "",
        "a little": f"; a gain, but of less than {margin:g}",
        "hurts": "",
        "flat": f"; that many would change it by less than ±{margin:g}",
        "cannot tell": "; the data cannot tell whether that many would help",
    }[reading(gain, margin)]
    out.append(
        f"{where}, {size:,} training images are predicted to change valid accuracy by "
        f"{gain_text(gain)} over the {largest:,} measured (extrapolated: the "
        f"{extrapolation.WORDS.get(c.family, c.family)} fitted to {len(c.sizes)} sizes, its band "
        f"calibrated by backtest){tail}."
    )
    out.extend(f"{w[0].upper()}{w[1:]}." for w in c.warnings)
    return out


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
