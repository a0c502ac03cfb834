"""The diagnosis as one self-contained HTML page, rendered from a Jinja2 template.

Autoescaping is on: every string that comes from a user (a model reference, a class name,
a path) is escaped; pictures are inline PNGs, so the page works offline and makes no request.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import stats, store
from ..history import History
from ..viz.html import png_base64
from ..viz.pages import templates
from ..viz.plots import figure_png, integer_epochs, new_figure
from ..viz.study_plots import FOREST_ALT, forest_caption, forest_figure
from .extrapolation import WORDS, Fit
from .results import BUDGETS, GAP_BOUND, RISE_BOUND, LearningCurve
from .verdict import gain_text

if TYPE_CHECKING:
    from .results import Diagnosis

TEMPLATE = "diagnosis.html.j2"  # in overfitlab/templates/


def _curves_png(histories: dict[str, list[float]], title: str, ylabel: str = "accuracy") -> str:

    figure, axes = new_figure(figsize=(6, 3.2))
    integer_epochs(axes)
    for label, values in histories.items():
        axes.plot(range(1, len(values) + 1), values, label=label)
    axes.set_xlabel("epoch")
    axes.set_ylabel(ylabel)
    axes.set_title(title)
    axes.legend(fontsize=8)
    figure.tight_layout()
    return png_base64(figure_png(figure, dpi=96, tight=False))


def _sizes_png(d: Diagnosis) -> str:
    """Valid accuracy over sizes on a log axis: the recipe's sizes and those measured above it
    (95 % intervals over seeds), the fitted curve, and its extrapolation dashed in its band."""
    # start-up: numpy and matplotlib with the plot
    import numpy as np
    from matplotlib.ticker import NullFormatter

    c = d.learning_curve
    figure, axes = new_figure(figsize=(6, 3.4))
    axes.set_xscale("log")
    for measured, marker, label in (
        (False, "o", "valid, recipe's sizes"),
        (True, "D", "valid, measured above"),
    ):
        points = [
            (s, v) for s, v in zip(c.sizes, c.valid_acc, strict=True) if (s > c.recipe_size) == measured
        ]
        if points:
            xs, its = (list(t) for t in zip(*points, strict=True))
            means = np.array([i.mean for i in its])
            error = np.array([means - [i.low for i in its], [i.high for i in its] - means])
            axes.errorbar(xs, means, yerr=np.clip(error, 0, None), fmt=marker, capsize=3, label=label)
    axes.plot(c.sizes, [i.mean for i in c.train_acc], "s--", color="grey", alpha=0.6, label="train")
    if c.params and c.predicted:
        fit = Fit(c.family, c.params)
        inside = np.geomspace(min(c.sizes), max(c.sizes), 60)
        axes.plot(inside, [fit.accuracy(n) for n in inside], "-", color="black", lw=1, label="fitted curve")
        last = c.valid_acc[-1].mean
        xs = [c.sizes[-1], *c.predicted_sizes]
        axes.plot(xs, [last, *(last + g.mean for g in c.predicted)], "--", color="black", lw=1)
        axes.fill_between(
            xs,
            [last, *(last + g.low for g in c.predicted)],
            [last, *(last + g.high for g in c.predicted)],
            color="black",
            alpha=0.12,
            label="extrapolated, 95 % band",
        )
    if c.sizes[-1] < c.available <= 4 * c.sizes[-1]:
        axes.axvline(c.available, color="grey", lw=0.8, ls=":", label=f"all {c.available:,} images")
    # A log axis under one decade labels its minor ticks too, on top of each other: label the
    # sizes that matter instead, with thousands separators.
    ticks = sorted({c.sizes[0], c.recipe_size, c.sizes[-1], *c.predicted_sizes[3::4]})
    axes.set_xticks(ticks, [f"{t:,}" for t in ticks], fontsize=7)
    axes.xaxis.set_minor_formatter(NullFormatter())
    axes.set_xlabel("training images (log scale)")
    axes.set_ylabel("final accuracy")
    axes.legend(fontsize=7, loc="lower right")
    figure.tight_layout()
    return png_base64(figure_png(figure, dpi=96, tight=False))


def _part2(c: LearningCurve) -> dict[str, Any]:
    """Part 2's rows: measured sizes, then the extrapolated 2× and 4× of the largest."""
    measured = dict(zip(c.above, c.measured, strict=True))
    checks = dict(zip(c.above, c.checks, strict=True))
    rows = [
        {
            "size": s,
            "train": t.text(),
            "valid": v.text(),
            "gain": gain_text(measured[s])
            if s in measured
            else ("the recipe's size" if s == c.recipe_size else ""),
            "check": gain_text(checks[s]) if checks.get(s) is not None else "",  # type: ignore[arg-type]
        }
        for s, t, v in zip(c.sizes, c.train_acc, c.valid_acc, strict=True)
    ]
    extrapolated = [
        {"size": c.predicted_sizes[k], "times": t, "gain": gain_text(c.predicted[k])}
        for k, t in ((3, 2), (7, 4))
        if len(c.predicted) > k
    ]
    return {"rows": rows, "extrapolated": extrapolated, "largest": c.sizes[-1]}


def render(d: Diagnosis, baseline_curves: dict[str, list[float]]) -> str:
    env = templates()
    o = d.overfitting

    gaps = {
        r["variant"]: (r["differences"].get(stats.GAP_METRIC) or {}).get("mean")
        for r in d.remedies.table["remedies"]
    }
    remedies = [
        {
            "variant": x["variant"],
            "answer": x["answer"],
            "acc": f"{_f(x['effect'])} [{_f(x['low'])}, {_f(x['high'])}]",
            "seeds": x["seeds"],
            "gap": _f(gaps.get(x["variant"])),
            "sentence": x["sentence"],
        }
        for x in d.remedies.decisions
    ]
    rows = [
        (str(x["variant"]), str(x["answer"]), float(x["effect"]), float(x["low"]), float(x["high"]))
        for x in d.remedies.decisions
        if x["effect"] is not None and x["low"] is not None and x["high"] is not None
    ]
    forest = png_base64(figure_png(forest_figure(rows, d.remedies.margin))) if rows else ""

    def seeds(it: Any) -> str:  # epochs as the whole numbers they are
        return ", ".join(f"{v:.0f}" if float(v).is_integer() else f"{v:.3f}" for v in it.values)

    part1 = [
        ("final train accuracy", o.train_acc),
        ("final valid accuracy", o.valid_acc),
        ("gap at the best epoch (train − valid acc)", o.gap_best),
        ("gap at the last epoch", o.gap_last),
        ("valid loss rise, last epoch over lowest", o.loss_rise),
        ("epoch of the lowest valid loss", o.turn_epoch),
        ("epoch after which valid loss stays above its minimum", o.stays_above_epoch),
    ]
    return env.get_template(TEMPLATE).render(
        recipe=d.recipe,
        verdict=d.verdict,
        budget=d.budget,
        wall_seconds=d.wall_seconds,
        part1=[(text, {"text": it.text(), "seeds": seeds(it)}) for text, it in part1],
        overfitting=o,
        gap_bound=_f(GAP_BOUND),
        rise_bound=f"{RISE_BOUND:.0%}",
        curve=d.learning_curve,
        family_words=WORDS.get(d.learning_curve.family, d.learning_curve.family),
        part2=_part2(d.learning_curve),
        memorisation=d.memorisation,
        noisy=[
            {
                "fraction": n.fraction,
                "best": n.best_epoch_acc.text(),
                "last": n.last_epoch_acc.text(),
                "saved": n.saved.text(),
            }
            for n in d.noisy_labels
        ],
        gallery=d.gallery,
        label_check=d.label_check,
        folds=BUDGETS[d.budget].folds,
        names=list(d.class_names),
        remedies=remedies,
        remedy_question=d.remedies.question,
        forest=forest,
        forest_alt=FOREST_ALT,
        forest_caption=forest_caption(d.remedies.margin),
        baseline_test=d.remedies.baseline_test.text(),
        test_split=d.remedies.test_split or "held out before anything trained",
        recommended=d.remedies.recommended,
        recommended_test=d.remedies.recommended_test.text() if d.remedies.recommended_test else "",
        pictures={
            "baseline": _curves_png(baseline_curves, "baseline (mean over seeds)"),
            "sizes": _sizes_png(d),
            "random": _curves_png(
                {
                    "train (random labels)": list(d.memorisation.train_acc),
                    "valid": list(d.memorisation.valid_acc),
                },
                "random labels",
            ),
        },
    )


def _f(value: float | None) -> str:
    return "–" if value is None or not math.isfinite(value) else stats.fmt(value)


def write_report(d: Diagnosis, path: Path) -> None:

    curves: dict[str, list[float]] = {}
    study = path.parent / "study"
    histories = [
        History.from_dict(store.read_json(h)) for h in sorted(study.glob("baseline-s*/history.json"))
    ]
    for column in ("train_acc", "valid_acc"):
        length = min(len(h.epochs) for h in histories)
        curves[column] = [sum(h.epochs[i][column] for h in histories) / len(histories) for i in range(length)]
    store.atomic_write(path, render(d, curves))
