"""A study's answer to "which remedy helps": each remedy's decision over the stages of seeds it
ran (``overfitlab.sequential``), and the runs of the next stage for those still open."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from ..data.edits import read_edits
from ..errors import OverfitlabError
from ..sequential import Answer, Decision, Design, decide
from ..stats import HEADLINE_METRIC, baseline_name, completed, pair_values, variant_order
from .spec import RunPlan, StudySpec, plans_for

Row = Mapping[str, Any]


def design_of(spec: StudySpec, remedies: int) -> Design:
    """The spec's design: its stages (one stage when every seed runs at once), the family of
    ``remedies`` compared, its margin."""
    stages = spec.stages or (len(spec.seeds),)
    return Design(stages=tuple(stages), remedies=remedies, margin=spec.margin)


def stage_differences(rows: Sequence[Row], baseline: str, variant: str, spec: StudySpec) -> list[np.ndarray]:
    """The paired differences (variant − baseline, the returned model's valid accuracy) of each
    stage the variant ran, in order, up to its first stage without runs."""
    out = []
    for seeds in spec.stage_seeds():
        chosen = set(seeds)
        base = [r for r in rows if r["variant"] == baseline and r.get("seed") in chosen]
        remedy = [r for r in rows if r["variant"] == variant and r.get("seed") in chosen]
        if not remedy:
            break
        before, after = pair_values(base, remedy, HEADLINE_METRIC)
        out.append(after - before)
    return out


def decisions(
    rows: Iterable[Row], spec: StudySpec, left_out: Iterable[Mapping[str, str]] = ()
) -> list[Decision]:
    """Every remedy's decision, largest effect first; none for a grid or a lone variant. The
    remedies are every variant but the baseline (or the spec's ``compared``), less those left out."""
    rows = list(rows)
    order = variant_order(rows, [v.name for v in spec.variants])
    baseline = baseline_name(order)
    refused = {entry["variant"] for entry in left_out}
    chosen = set(spec.compared) if spec.compared else set(order)
    names = [v for v in order if v != baseline and v not in refused and v in chosen]
    if not spec.compares or baseline is None or not names:
        return []
    design = design_of(spec, len(names))
    runs = completed(rows)
    out = [decide_variant(runs, baseline, name, spec, design) for name in names]
    return sorted(out, key=lambda d: -d.effect if np.isfinite(d.effect) else np.inf)


def decide_variant(
    rows: Sequence[Row], baseline: str, variant: str, spec: StudySpec, design: Design
) -> Decision:
    diffs = stage_differences(rows, baseline, variant, spec)
    if not diffs:
        return Decision(variant, Answer.UNDECIDED, float("nan"), -1.0, 1.0, 0, 0, spec.margin, "no runs")
    return decide(variant, diffs, design)


def next_stage(
    spec: StudySpec,
    plans: Sequence[RunPlan],
    rows: Sequence[Row],
    left_out: Iterable[Mapping[str, str]],
    threads: int | None,
) -> list[RunPlan]:
    """The runs of the next stage: its seeds for the baseline and every remedy still open
    (neither decided, nor futile); none when every remedy is settled or the stages are spent."""
    stages = spec.stage_seeds()
    planned = {p.seed for p in plans}
    done = sum(1 for seeds in stages if planned & set(seeds))
    if not spec.stages or done >= len(stages):
        return []
    open_ = {d.variant for d in decisions(rows, spec, left_out) if not d.stopped}
    if not open_:
        return []
    baseline = baseline_name([v.name for v in spec.variants])
    chosen = [v for v in spec.variants if v.name == baseline or v.name in open_]
    return [p.with_absolute_data_dir() for p in plans_for(spec, chosen, stages[done], threads)]


def question(spec: StudySpec, remedies: int) -> str:
    """What the decisions answer, with the numbers of the design behind them."""
    seeds = (
        f"seeds in stages of {', '.join(map(str, spec.stages))}"
        if spec.stages
        else f"{len(spec.seeds)} seeds"
    )
    moved = [v.name for v in spec.variants if _edits_held_out(v.overrides)]
    caveat = (
        f" ({', '.join(moved)} {'edits' if len(moved) == 1 else 'edit'} the validation or test images "
        "themselves with --exclude/--relabel: measured on other images than the baseline's, the "
        "difference is partly the images')"
        if moved
        else ""
    )
    return (
        f"Which remedy changes the returned model's held-out (valid) accuracy? Remedy − baseline on "
        f"the same seeds, {seeds}, with intervals that hold together for all {remedies} remedies "
        f"(95 %); no effect means within ±{spec.margin:g}{caveat}:"
    )


def _edits_held_out(overrides: Mapping[str, Any]) -> bool:
    """Whether a variant's --exclude/--relabel list names validation or test images."""
    try:
        edits = read_edits(overrides.get("exclude"), overrides.get("relabel"))
    except OverfitlabError:  # its runs fail and say why
        return False
    return any(split != "train" for split in (*edits.exclude, *edits.relabel))
