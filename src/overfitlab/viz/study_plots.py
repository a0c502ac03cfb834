"""Pictures of a study: mean learning curves per variant, the gap per variant, accuracy against a grid.

Each function takes numbers already computed by ``stats`` and returns a
matplotlib figure; ``plots.figure_png`` turns it into PNG bytes. Styles follow
the single-run picture: train dashed, valid solid.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import matplotlib
import numpy as np

from ..curves import Curve
from ..stats import Summary
from .plots import TRAIN_STYLE, VALID_STYLE, integer_epochs, new_figure

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

BASELINE_COLOR = "tab:red"
REMEDY_COLOR = "tab:blue"
PANELS = (("loss", "cross-entropy loss"), ("acc", "accuracy"))


def _band(ax: Axes, curve: Curve, color: str) -> None:
    # Where fewer than two runs remain the std is NaN and fill_between leaves a hole.
    ax.fill_between(
        curve.epochs, curve.mean - curve.std, curve.mean + curve.std, color=color, alpha=0.18, linewidth=0
    )


def small_multiples_figure(
    curves: Mapping[str, Mapping[str, Curve]], baseline: str | None = None, title: str = "", columns: int = 3
) -> Figure:
    """One small panel per variant (label → {column: Curve}) in a grid, all on shared axes:
    accuracy, train dashed and valid solid, mean over seeds with a ± one std band; every
    other panel draws the baseline's valid curve dotted in red, the reference to read against.
    """
    labels = list(curves)
    cols = max(1, min(columns, len(labels)))
    rows = max(1, math.ceil(len(labels) / cols))
    fig, axes = new_figure(
        rows, cols, figsize=(2.9 * cols + 0.4, 0.7 + 2.1 * rows), sharex=True, sharey=True, squeeze=False
    )
    reference = curves.get(baseline or "", {}).get("valid_acc")
    for index, ax in enumerate(axes.flat):
        if index >= len(labels):
            ax.set_visible(False)
            continue
        label = labels[index]
        if reference is not None and label != baseline and len(reference.epochs):
            ax.plot(
                reference.epochs,
                reference.mean,
                color=BASELINE_COLOR,
                linestyle=":",
                linewidth=1.3,
                label=f"{baseline}, valid",
            )
        for split, style in (("train", TRAIN_STYLE), ("valid", VALID_STYLE)):
            curve = curves[label].get(f"{split}_acc")
            if curve is None or not len(curve.epochs):
                continue
            ax.plot(curve.epochs, curve.mean, **style)
            _band(ax, curve, style["color"])
        ax.set_title(f"{label}{_runs_note(curves[label])}", loc="left", fontsize=8.5, fontweight="bold")
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=8)
        if index % cols == 0:
            ax.set_ylabel("accuracy", fontsize=8.5)
        if index >= len(labels) - cols:
            ax.set_xlabel("epoch", fontsize=8.5)
            ax.xaxis.set_tick_params(labelbottom=True)
            integer_epochs(ax)
    # The legend where it names everything: the first panel with the baseline's reference line.
    legend_ax = axes.flat[1] if reference is not None and len(labels) > 1 else axes.flat[0]
    legend_ax.legend(fontsize=7.5, loc="lower right")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def overlay_figure(
    curves: Mapping[str, Mapping[str, Curve]], baseline: str | None = None, title: str = ""
) -> Figure:
    """Every variant's mean valid curve on one pair of axes, loss left and accuracy right;
    the baseline thick in red, the others thin, each named at its curve's end."""
    fig, axes = new_figure(1, 2, figsize=(9, 3.6), sharex=True, squeeze=False)
    colors = [c for c in matplotlib.rcParams["axes.prop_cycle"].by_key()["color"] if c != "#d62728"]
    others = [label for label in curves if label != baseline]
    drawn = others + [label for label in curves if label == baseline]  # the baseline on top
    for ax, (metric, ylabel) in zip(axes[0], PANELS, strict=True):
        for label in drawn:
            curve = curves[label].get(f"valid_{metric}")
            if curve is None or not len(curve.epochs):
                continue
            is_base = label == baseline
            color = BASELINE_COLOR if is_base else colors[others.index(label) % len(colors)]
            ax.plot(curve.epochs, curve.mean, color=color, linewidth=2.2 if is_base else 1.0, label=label)
        ax.set_ylabel(f"valid {ylabel}", fontsize=9)
        ax.set_xlabel("epoch", fontsize=9)
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=9)
        integer_epochs(ax)
    axes[0][1].legend(fontsize=7, loc="lower right", ncol=2)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def _runs_note(curves: Mapping[str, Curve]) -> str:
    counts = [int(c.n.max()) for c in curves.values() if len(c.n)]
    if not counts:
        return ""
    n = max(counts)
    return f"  (n = {n} seed{'s' if n != 1 else ''})"


def gap_figure(
    summaries: Sequence[tuple[str, Summary]],
    baseline: str | None,
    xlabel: str = "final gap, train − valid accuracy",
) -> Figure:
    """Mean final gap per variant with its 95% interval; the baseline in red with a reference line.

    ``summaries`` is [(label, Summary)] top to bottom; labels equal to, or
    starting with, ``baseline`` are highlighted.
    """
    labels = [label for label, _ in summaries]
    fig, ax = new_figure(figsize=(7, 1.0 + 0.45 * max(len(labels), 1)))
    y = np.arange(len(labels))[::-1]
    for yi, (label, summary) in zip(y, summaries, strict=True):
        is_base = _is_baseline(label, baseline)
        color = BASELINE_COLOR if is_base else REMEDY_COLOR
        if math.isfinite(summary.low):
            ax.errorbar(
                summary.mean,
                yi,
                xerr=[[summary.mean - summary.low], [summary.high - summary.mean]],
                fmt="o",
                color=color,
                capsize=4,
                markersize=6,
            )
        else:  # one seed: a point, no interval
            ax.plot(summary.mean, yi, "o", color=color, markerfacecolor="white", markersize=6)
        if label == baseline and math.isfinite(summary.mean):  # one reference: not one per grid value
            ax.axvline(summary.mean, color=BASELINE_COLOR, linestyle="--", linewidth=1, alpha=0.7)
    ax.set_yticks(y)
    ax.set_yticklabels([f"{label}  (n={s.n})" for label, s in summaries], fontsize=9)
    for tick, label in zip(ax.get_yticklabels(), labels, strict=True):
        if _is_baseline(label, baseline):
            tick.set_color(BASELINE_COLOR)
            tick.set_fontweight("bold")
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_xlabel(f"{xlabel} (mean, 95% t-interval)", fontsize=9)
    ax.tick_params(axis="x", labelsize=9)
    ax.grid(axis="x", alpha=0.3)
    ax.set_ylim(-0.7, len(labels) - 0.3)
    fig.tight_layout()
    return fig


def _is_baseline(label: str, baseline: str | None) -> bool:
    return baseline is not None and (label == baseline or label.startswith(f"{baseline} · "))


def grid_figure(
    summaries: Mapping[str, Mapping[Any, Mapping[str, Summary]]], grid_field: str, baseline: str | None = None
) -> Figure:
    """Accuracy against the grid value (e.g. train size), one colour per variant.

    ``summaries`` is {variant: {grid value: {metric: Summary}}}; left, final
    train (dashed) and valid (solid) accuracy; right, the gap between them.
    Error bars are 95% t-intervals over seeds.
    """
    fig, (acc_ax, gap_ax) = new_figure(1, 2, figsize=(9, 3.8))
    colors = matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]
    all_x: list[float] = []
    for index, (variant, by_value) in enumerate(summaries.items()):
        color = BASELINE_COLOR if variant == baseline else colors[index % len(colors)]
        if variant != baseline and color == BASELINE_COLOR:
            color = "tab:gray"
        xs = sorted(by_value)
        all_x += [float(x) for x in xs]
        for ax, metric, style in (
            (acc_ax, "final_train_acc", "--"),
            (acc_ax, "final_valid_acc", "-"),
            (gap_ax, "final_gap_acc", "-"),
        ):
            means = np.array([by_value[x][metric].mean for x in xs])
            low = np.array([by_value[x][metric].low for x in xs])
            high = np.array([by_value[x][metric].high for x in xs])
            # Undefined intervals (one seed) draw as no bar rather than a zero one.
            err = np.nan_to_num(np.vstack([means - low, high - means]), nan=0.0)
            split = "train" if "train" in metric else "valid"
            label = f"{variant}, {split}" if ax is acc_ax else variant
            ax.errorbar(
                xs,
                means,
                yerr=err,
                color=color,
                linestyle=style,
                marker="o",
                markersize=4,
                capsize=3,
                label=label,
            )
    for ax, ylabel in ((acc_ax, "final accuracy"), (gap_ax, "final gap, train − valid accuracy")):
        ax.set_xlabel(grid_field.replace("_", " "), fontsize=9)
        ax.set_ylabel(ylabel, fontsize=9)
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=9)
        if all_x and min(all_x) > 0 and max(all_x) / min(all_x) >= 10:
            ax.set_xscale("log")
    # Two seeds give t = 12.7 and bars far outside [0, 1]: accuracy cannot leave it, so neither does the axis.
    low, high = acc_ax.get_ylim()
    acc_ax.set_ylim(max(low, -0.02), min(high, 1.02))
    acc_ax.legend(fontsize=8)
    gap_ax.axhline(0, color="black", linewidth=0.8)
    fig.tight_layout()
    return fig


FOREST_ALT = "each remedy's effect on held-out accuracy with its simultaneous interval"


def forest_caption(margin: float) -> str:
    """What the forest plot shows, in the words of both pages that draw it."""
    return (
        "Each remedy − baseline: the returned model's valid accuracy, mean over paired seeds (dot) and "
        f"simultaneous 95 % interval (bar); grey band: no effect (±{margin:g})."
    )


ANSWER_COLORS = {"helps": "tab:green", "hurts": "tab:red", "no effect": "tab:gray", "undecided": "tab:orange"}


def forest_figure(rows: Sequence[tuple[str, str, float, float, float]], margin: float) -> Figure:
    """Each remedy's effect on held-out accuracy with its simultaneous interval (label, answer,
    effect, low, high; drawn top to bottom in the order given) against 0 and the ±margin band
    inside which an effect counts as none; each interval coloured by its answer."""
    height = 0.9 + 0.42 * len(rows)
    fig, ax = new_figure(figsize=(6.4, height))
    ax.axvspan(-margin, margin, color="0.88", linewidth=0, label=f"no effect: ±{margin:g}")
    ax.axvline(0.0, color="0.35", linewidth=1)
    ys = list(range(len(rows)))[::-1]
    # The axis fits the effects and the intervals of a usable width; a wider one (a remedy
    # stopped after its first stage) runs to the edge and ends in an arrow.
    narrow = [x for r in rows if r[4] - r[3] < 0.1 for x in r[3:]]
    reach = max([abs(r[2]) for r in rows] + [abs(x) for x in narrow] + [2 * margin])
    limit = min(1.15 * reach, 1.0)
    seen: set[str] = set()
    for y, (_label, answer, effect, low, high) in zip(ys, rows, strict=True):
        color = ANSWER_COLORS.get(answer, "black")
        shown = answer not in seen
        seen.add(answer)
        ax.plot(
            [max(low, -limit), min(high, limit)], [y, y], color=color, linewidth=2.5, solid_capstyle="butt"
        )
        for end, marker in ((low, "<"), (high, ">")):
            if abs(end) > limit:
                ax.plot([math.copysign(limit, end)], [y], marker, color=color, markersize=7)
        ax.plot([effect], [y], "o", color=color, markersize=6, label=answer if shown else None)
    ax.set_yticks(ys, [r[0] for r in rows])
    ax.set_xlim(-limit, limit)
    ax.set_ylim(-0.7, len(rows) - 0.3)
    ax.set_xlabel("held-out accuracy, remedy − baseline (simultaneous 95 % intervals)")
    ax.legend(fontsize=8, loc="lower right", frameon=False)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return fig
