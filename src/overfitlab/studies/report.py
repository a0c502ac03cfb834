"""One self-contained HTML page per study: which remedies close the gap, by how much, how sure.

``write_report(runs_dir, study)`` reads the study's rows from the run index and
each run's ``history.json``, and writes ``runs_dir/<study>/report.html``: CSS
inline, pictures as base64 PNG data URIs, no script, no font, no request to
anywhere, so the file can be mailed, archived and opened offline.

Every number in a table carries its full-precision value in ``data-*``
attributes (``data-run-metric``, ``data-variant``, ``data-value`` ...): the page
rounds for people, tests and scripts read the exact values.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import stats
from ..curves import curves_by_group
from ..errors import OverfitlabError
from ..sequential import Answer, Decision
from ..stats import Comparison, GroupKey, Summary
from ..store import atomic_write
from ..viz import study_plots
from ..viz.pages import templates
from ..viz.plots import figure_png
from .decisions import decisions
from .decisions import question as question_text
from .report_cells import (
    Cell,
    Picture,
    comparison_cell,
    data_attributes,
    digits_of,
    exact,
    group_label,
    ordered_keys,
    picture,
    sortable,
    summary_cell,
    value_text,
)
from .report_data import (
    COMPARISON_HEADERS,
    QUESTION,
    REPORT_FILE,
    RUN_TABLE_COLUMNS,
    TEMPLATE,
    VARIANT_TABLE_COLUMNS,
    StudyData,
    load_study,
    spec_base,
    spec_grid,
    spec_variants,
)
from .spec import StudySpec


def grid_lines(
    summaries: Mapping[GroupKey, Mapping[str, Summary]], order: Sequence[str]
) -> list[tuple[str, str]]:
    """[(variant, "value: gap, ...")]: the mean final accuracy gap at each grid value."""
    lines = []
    for variant in order:
        values = sorted((k[1] for k in summaries if k[0] == variant), key=sortable)
        if values:
            gaps = ", ".join(
                f"{v}: {stats.fmt(summaries[(variant, v)][stats.GAP_METRIC].mean)}" for v in values
            )
            lines.append((variant, gaps))
    return lines


def question(
    data: StudyData,
    order: list[str],
    baseline: str | None,
    comparisons: Mapping[str, Mapping[str, Comparison]],
    summaries: Mapping[GroupKey, Mapping[str, Summary]],
    grid_field: str | None,
) -> dict[str, Any]:
    rows = data.rows
    complete = len(stats.completed(rows))
    failed = sum(r.get("status") == "failed" for r in rows)
    other = len(rows) - complete - failed
    per_variant: dict[str, set[Any]] = {}
    for r in stats.completed(rows):
        per_variant.setdefault(r["variant"], set()).add(r.get("seed"))
    counts = sorted(len(s) for s in per_variant.values()) or [0]
    seeds = f"{counts[0]}" if counts[0] == counts[-1] else f"{counts[0]} to {counts[-1]}"
    return {
        "text": QUESTION,
        "description": (data.study.get("spec") or {}).get("description") or "",
        "runs": len(rows),
        "complete": complete,
        "failed": failed,
        "unfinished": other,
        "variants": len(order),
        "seeds": seeds,
        "baseline": baseline,
        "grid_lines": grid_lines(summaries, order) if grid_field else [],
        "headline": headline(comparisons) if comparisons else None,
    }


@dataclass(frozen=True)
class Headline:
    """The answer: remedies that beat the baseline, or why none can be named, and under-fitting."""

    compared: int  # remedies in Holm's family
    better: list[dict[str, Any]]  # one per remedy, best first
    largest: dict[str, Any] | None  # when none is better: the largest gain and the seeds it needs
    under: list[str]

    @property
    def adjusted(self) -> str:
        return f"after adjusting for the {self.compared} remedies compared (Holm)"


def headline(comparisons: Mapping[str, Mapping[str, Comparison]]) -> Headline:
    """Remedies judged by the valid accuracy of the model a run returns, beyond seed noise
    after Holm's adjustment for the number compared; a narrower gap with a lower accuracy
    named as under-fitting; when nothing is told apart, the seeds it would take."""
    acc, gap = stats.HEADLINE_METRIC, stats.GAP_METRIC
    m = sum(c[acc].p_value is not None for c in comparisons.values())
    better = [v for v, c in comparisons.items() if c[acc].tells_apart and c[acc].mean_diff > 0]
    better.sort(key=lambda v: -comparisons[v][acc].mean_diff)
    under = [
        v
        for v, c in comparisons.items()
        if c[acc].tells_apart and c[acc].mean_diff < 0 and c[gap].mean_diff < 0
    ]

    def item(v: str) -> dict[str, Any]:
        c, g = comparisons[v][acc], comparisons[v][gap]
        return {
            "variant": v,
            "diff": stats.fmt(c.mean_diff, 3),
            "low": stats.fmt(c.low),
            "high": stats.fmt(c.high),
            "p": stats.format_p(c.p_adjusted),
            "n": c.n,
            "gap": stats.fmt(g.mean_diff),
        }

    largest = None
    if not better:
        gains = [
            v for v, c in comparisons.items() if math.isfinite(c[acc].mean_diff) and c[acc].mean_diff > 0
        ]
        if gains:
            top = max(gains, key=lambda v: comparisons[v][acc].mean_diff)
            seeds = comparisons[top][acc].seeds_needed
            if seeds is not None:
                largest = {"variant": top, "diff": stats.fmt(comparisons[top][acc].mean_diff), "seeds": seeds}
    return Headline(m, [item(v) for v in better], largest, under)


def recipe(data: StudyData, baseline: str | None, grid_field: str | None, grid: list[Any]) -> dict[str, Any]:
    spec = data.study.get("spec") or {}
    variants = [
        (name, ", ".join(f"{k} = {value_text(v)}" for k, v in overrides.items()) or "(base config)")
        for name, overrides in spec_variants(spec)
    ]
    seeds = data.study.get("seeds") or spec.get("seeds") or []
    return {
        "base": [(k, value_text(v)) for k, v in spec_base(spec).items()],
        "variants": variants,
        "baseline": baseline,
        "grid_field": grid_field,
        "grid": ", ".join(str(v) for v in grid),
        "seeds": ", ".join(str(s) for s in seeds),
    }


def remedies(
    comparisons: Mapping[str, Mapping[str, Comparison]],
    summaries: Mapping[GroupKey, Mapping[str, Summary]],
    baseline: str | None,
    order: list[str],
    grid_field: str | None,
    answers: Sequence[Decision] = (),
) -> dict[str, Any]:
    """The comparison table, sorted by the effect on the returned model's valid accuracy
    (largest first), its header made from the same list as its cells, and the per-variant table."""
    answer = {d.variant: d for d in answers}
    metrics, gap = stats.COMPARED, stats.GAP_METRIC  # COMPARISON_HEADERS words each
    compared = []
    for variant in sorted(comparisons, key=lambda v: _effect_key(comparisons[v][stats.HEADLINE_METRIC])):
        c = comparisons[variant]
        decided = answer.get(variant)
        compared.append(
            {
                "variant": variant,
                "apart": decided is not None and decided.answer in (Answer.HELPS, Answer.HURTS),
                "cells": [comparison_cell(c[m]) for m in metrics],
                "answer": decided.sentence() if decided else stats.verdict(c[stats.HEADLINE_METRIC], c[gap]),
            }
        )
    variants = []
    for key in ordered_keys(summaries, order):
        variant, value = key
        variants.append(
            {
                "variant": variant,
                "baseline": variant == baseline,
                "grid_value": value,
                "n": max(s.n for s in summaries[key].values()),
                "cells": [summary_cell(m, variant, value, summaries[key][m]) for m in VARIANT_TABLE_COLUMNS],
            }
        )
    return {
        "compared": compared,
        "columns": ["remedy", *(COMPARISON_HEADERS[m] for m in metrics), "answer"],
        "variants": variants,
        "baseline": baseline,
        "grid_field": grid_field,
        "metric_names": [stats.METRICS[m] for m in VARIANT_TABLE_COLUMNS],
    }


def _effect_key(c: Comparison) -> float:
    return -c.mean_diff if math.isfinite(c.mean_diff) else math.inf


def answer_section(data: StudyData, left_out: Sequence[Mapping[str, str]]) -> dict[str, Any] | None:
    """The answer, first on the page: the question with the design's numbers, each remedy's
    sentence, and the forest plot of the effects against 0 and the margin."""
    try:
        spec = StudySpec.from_dict(data.study.get("spec") or {})
    except OverfitlabError:  # a spec this version cannot read: the tables still show
        return None
    answers = decisions(data.rows, spec, left_out)
    if not answers:
        return None
    rows = [(d.variant, str(d.answer), d.effect, d.low, d.high) for d in answers if math.isfinite(d.effect)]
    forest = picture(
        figure_png(study_plots.forest_figure(rows, spec.margin)),
        study_plots.FOREST_ALT,
        study_plots.forest_caption(spec.margin),
    )
    return {
        "question": question_text(spec, len(answers)),
        "answers": [
            {"variant": d.variant, "answer": str(d.answer), "sentence": d.sentence()} for d in answers
        ],
        "forest": forest,
        "answers_list": answers,
    }


def pictures(
    data: StudyData,
    summaries: Mapping[GroupKey, Mapping[str, Summary]],
    baseline: str | None,
    order: list[str],
    grid_field: str | None,
) -> list[Picture]:
    out = []
    keys = ordered_keys(summaries, order)
    gap_rows = [(group_label(k, grid_field), summaries[k]["final_gap_acc"]) for k in keys]
    if gap_rows:
        out.append(
            picture(
                figure_png(study_plots.gap_figure(gap_rows, baseline)),
                "final accuracy gap per variant",
                "Final gap (train − valid accuracy of the model the run returns: the restored "
                "best epoch under early stopping, else the last) per variant: mean over seeds "
                "with its 95% t-interval; the baseline in red, its mean as a dashed line. "
                "Left of the line: a narrower gap than the baseline.",
            )
        )
    numeric = all(isinstance(k[1], (int, float)) for k in keys) and len({k[1] for k in keys}) > 1
    if grid_field and numeric:
        by_variant: dict[str, dict[str, Any]] = {}
        for variant, value in keys:
            by_variant.setdefault(variant, {})[value] = summaries[(variant, value)]
        out.append(
            picture(
                figure_png(study_plots.grid_figure(by_variant, grid_field, baseline)),
                f"accuracy against {grid_field}",
                f"Final train (dashed) and valid (solid) accuracy against {grid_field}, "
                "and the gap between them; bars are 95% t-intervals over seeds.",
            )
        )
    curves = curves_by_group(data.rows, data.histories)
    for title, panels in curve_figures(keys, curves, grid_field):
        reference = baseline if baseline in panels else None
        where = f", {title}" if title else ""
        out.append(
            picture(
                figure_png(study_plots.small_multiples_figure(panels, reference, title)),
                f"learning curves{where}",
                f"Learning curves{where or ' per variant'}, one panel each on shared axes: "
                "accuracy, train dashed, valid solid; the line is the mean over seeds, the band ± "
                "one std"
                + (
                    "; the red dotted line in the other panels is the baseline's valid accuracy"
                    * bool(reference)
                )
                + ". Runs stopped early drop out: at each epoch the mean is over the seeds still "
                "training then (no band where one remains).",
            )
        )
        if len(panels) > 1:
            out.append(
                picture(
                    figure_png(study_plots.overlay_figure(panels, reference, title)),
                    f"every variant's validation curves{where}",
                    f"Every variant's mean validation loss and accuracy{where} on the same axes"
                    + (", the baseline thick in red" if reference else "")
                    + ".",
                )
            )
    return out


def curve_figures(
    keys: Sequence[GroupKey], curves: Mapping[GroupKey, Any], grid_field: str | None
) -> list[tuple[str, dict[str, Any]]]:
    """[(title, {panel label: curves})]: one figure, or with a grid one per grid value
    (a single variant's grid: one figure, a panel per value)."""
    keys = [k for k in keys if k in curves]
    variants = list(dict.fromkeys(k[0] for k in keys))
    if grid_field is None:
        return [("", {k[0]: curves[k] for k in keys})] if keys else []
    if len(variants) == 1:
        return [(f"{variants[0]} by {grid_field}", {f"{grid_field} = {k[1]}": curves[k] for k in keys})]
    figures: dict[Any, dict[str, Any]] = {}
    for key in keys:
        figures.setdefault(key[1], {})[key[0]] = curves[key]
    return [(f"{grid_field} = {value}", panels) for value, panels in figures.items()]


def runs(rows: Sequence[Mapping[str, Any]], grid_field: str | None) -> dict[str, Any]:
    every = []
    for r in rows:
        cells = [
            Cell(
                stats.fmt(stats.metric_value(r, m), digits_of(m)),
                data_attributes(run_id=r["run_id"], metric=m, value=exact(stats.metric_value(r, m))),
            )
            for m in RUN_TABLE_COLUMNS
        ]
        every.append(
            {
                "run_id": r["run_id"],
                "variant": r.get("variant"),
                "seed": r.get("seed"),
                "grid_value": r.get("grid_value"),
                "status": r.get("status"),
                "stop_reason": r.get("stop_reason") or "–",
                "cells": cells,
            }
        )
    return {
        "failed": [
            {
                "run_id": r["run_id"],
                "variant": r.get("variant"),
                "seed": r.get("seed"),
                "error": r.get("error") or "no error recorded",
            }
            for r in rows
            if r.get("status") == "failed"
        ],
        "unfinished": ", ".join(
            f"{r['run_id']} ({r.get('status')})"
            for r in rows
            if r.get("status") not in ("complete", "failed")
        ),
        "every": every,
        "grid_field": grid_field,
        "columns": [stats.METRICS.get(m, m) for m in RUN_TABLE_COLUMNS],
    }


def _flatten(mapping: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    items = []
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            items += _flatten(value, f"{name}.")
        elif isinstance(value, (list, tuple)):
            items.append((name, ", ".join(str(v) for v in value)))
        else:
            items.append((name, value))
    return items


def machine_rows(study: Mapping[str, Any]) -> list[tuple[str, str]]:
    wall = study.get("wall_seconds")
    facts = [
        ("backend", study.get("backend")),
        ("workers", study.get("workers")),
        ("threads per run", study.get("threads")),
        ("seeds", ", ".join(str(s) for s in study.get("seeds") or [])),
        ("wall time", f"{wall:.1f} s" if isinstance(wall, (int, float)) else None),
        ("status", study.get("status")),
        ("created", study.get("created_at")),
    ]
    # The environment repeats backend, workers and threads: show each once.
    facts += [
        (k, v)
        for k, v in _flatten(study.get("environment") or {})
        if not (k in ("backend", "workers", "threads") and study.get(k) == v)
    ]
    return [(k, value_text(v)) for k, v in facts if v not in (None, "")]


def render_report(data: StudyData) -> str:
    """The whole page for one study, as a string."""

    spec = data.study.get("spec") or {}
    # A variant left out (the model cannot take it) has no runs: its own section says why,
    # the comparisons and the per-variant table do not list it.
    never = {entry["variant"] for entry in data.study.get("left_out") or []}
    order = stats.variant_order(data.rows, [name for name, _ in spec_variants(spec) if name not in never])
    baseline = stats.baseline_name(order)
    grid_field, grid = spec_grid(spec, data.rows)
    summaries = stats.group_summaries(data.rows)
    comparisons = stats.compare_all(data.rows, baseline=baseline, spec_variants=order)
    answer = answer_section(data, data.study.get("left_out") or [])
    answers = answer["answers_list"] if answer else []
    page = (
        templates()
        .get_template(TEMPLATE)
        .render(
            name=data.name,
            question=question(data, order, baseline, comparisons, summaries, grid_field),
            recipe=recipe(data, baseline, grid_field, grid),
            answer=answer,
            remedies=remedies(comparisons, summaries, baseline, order, grid_field, answers),
            pictures=pictures(data, summaries, baseline, order, grid_field),
            left_out=data.study.get("left_out") or [],
            runs=runs(data.rows, grid_field),
            environment=machine_rows(data.study),
        )
    )
    return page + "\n"


def write_report(
    runs_dir: str | os.PathLike[str], study_name: str, out: str | os.PathLike[str] | None = None
) -> Path:
    """Write the study's report (default runs_dir/<study>/report.html) atomically; return its path."""
    data = load_study(runs_dir, study_name)
    path = Path(out) if out is not None else Path(runs_dir) / study_name / REPORT_FILE
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OverfitlabError(f"cannot create {path.parent}: {err.strerror}") from None
    atomic_write(path, render_report(data))
    return path
