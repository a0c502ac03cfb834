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

import base64
import html
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import stats, study_plots
from .errors import OverfitlabError
from .history import History
from .plots import figure_png
from .stats import Comparison, GroupKey, Summary
from .store import HISTORY_JSON, atomic_write

QUESTION = "Which remedy makes the returned model generalise better, and by how much?"
REPORT_FILE = "report.html"
INDEX_FILE = "index.sqlite"

# Columns of the per-variant table, in order.
TABLE_METRICS = (
    "peak_valid_acc",
    "lowest_valid_loss",
    "final_gap_acc",
    "final_gap_loss",
    "best_epoch",
    "stop_epoch",
    "params",
    "seconds",
)
# Columns of the per-run table.
RUN_COLUMNS = (
    "peak_valid_acc",
    "lowest_valid_loss",
    "final_train_acc",
    "final_valid_acc",
    "final_gap_acc",
    "final_gap_loss",
    "best_epoch",
    "stop_epoch",
    "params",
    "seconds",
)
# Counts and times read better with fewer digits.
DIGITS = {"best_epoch": 1, "stop_epoch": 1, "params": 0, "seconds": 1}


# --------------------------------------------------------------------------- loading
@dataclass
class StudyData:
    """What the report needs, loaded once: the study record, its runs and their histories."""

    name: str
    study: Mapping[str, Any]
    rows: list[dict[str, Any]]
    histories: dict[str, History] = field(default_factory=dict)


def _run_path(runs_dir: Path, run_dir: str | None) -> Path | None:
    if not run_dir:
        return None
    path = Path(run_dir)
    return path if path.is_absolute() else runs_dir / path


def load_histories(runs_dir: Path, rows: Iterable[Mapping[str, Any]]) -> dict[str, History]:
    """{run_id: History} for the runs whose history.json exists and parses."""
    histories = {}
    for row in rows:
        path = _run_path(runs_dir, row.get("run_dir"))
        if path is None or not (path / HISTORY_JSON).is_file():
            continue
        try:
            histories[row["run_id"]] = History.from_json((path / HISTORY_JSON).read_text(encoding="utf-8"))
        except ValueError:
            continue  # a damaged history: the run's numbers stay in the tables, its curve is left out
    return histories


def load_study(runs_dir: str | os.PathLike[str], name: str) -> StudyData:
    runs_dir = Path(runs_dir)
    index_path = runs_dir / INDEX_FILE
    if not index_path.is_file():
        raise OverfitlabError(
            f"no study index at {index_path}: run `overfitlab study` first, or pass --runs-dir"
        )
    from .index import RunIndex  # late: rendering a page needs no SQLite

    with RunIndex(index_path) as index:
        study = index.study(name)
        if study is None:
            known = ", ".join(sorted(s["name"] for s in index.studies())) or "none"
            raise OverfitlabError(f"no study {name!r} in {index_path}: known studies are {known}")
        rows = index.runs(name)
    # What the index does not keep: the variants left out (the model could not take them).
    study_json = runs_dir / name / "study.json"
    if study_json.is_file():
        from . import store

        study = {**study, "left_out": store.read_json(study_json).get("left_out") or []}
    return StudyData(name, study, rows, load_histories(runs_dir, rows))


# --------------------------------------------------------------------------- spec helpers
def spec_variants(spec: Mapping[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """[(name, overrides)] in the study's order, from a list of {name, overrides} or a dict."""
    variants = spec.get("variants") or []
    if isinstance(variants, Mapping):
        return [(str(name), dict(overrides or {})) for name, overrides in variants.items()]
    out = []
    for variant in variants:
        if isinstance(variant, Mapping):
            overrides = variant.get("overrides", {k: v for k, v in variant.items() if k != "name"})
            out.append((str(variant.get("name")), dict(overrides or {})))
        else:
            out.append((str(variant), {}))
    return out


def spec_base(spec: Mapping[str, Any]) -> dict[str, Any]:
    for key in ("base", "config", "base_config"):
        if isinstance(spec.get(key), Mapping):
            return dict(spec[key])
    return {}


def spec_grid(spec: Mapping[str, Any], rows: Sequence[Mapping[str, Any]]) -> tuple[str | None, list[Any]]:
    grid = spec.get("grid")
    if isinstance(grid, Mapping) and grid.get("field"):
        return str(grid["field"]), list(grid.get("values") or stats.grid_values(rows))
    fields = [r.get("grid_field") for r in rows if r.get("grid_field")]
    return (fields[0], stats.grid_values(rows)) if fields else (None, [])


# --------------------------------------------------------------------------- HTML pieces
def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _exact(value: float | int | None) -> str:
    """Full precision for data-* attributes: repr round-trips a float exactly."""
    if value is None:
        return "nan"
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else "nan"
    return str(value)


def _attrs(**attributes: Any) -> str:
    return "".join(f' data-{k.replace("_", "-")}="{esc(v)}"' for k, v in attributes.items() if v is not None)


def _digits(metric: str) -> int:
    return DIGITS.get(metric, 3)


def summary_cell(metric: str, variant: str, grid_value: Any, summary: Summary) -> str:
    digits = _digits(metric)
    attrs = _attrs(
        run_metric=metric,
        variant=variant,
        grid_value=grid_value,
        n=summary.n,
        value=_exact(summary.mean),
        std=_exact(summary.std),
        low=_exact(summary.low),
        high=_exact(summary.high),
    )
    if summary.n == 0:
        return f"<td{attrs}>–</td>"
    spread = f" ± {stats.fmt(summary.std, digits)}" if summary.n > 1 else ""
    interval = (
        f'<br><span class="ci">[{stats.fmt(summary.low, digits)}, {stats.fmt(summary.high, digits)}]</span>'
        if math.isfinite(summary.low)
        else ""
    )
    return f"<td{attrs}>{stats.fmt(summary.mean, digits)}{spread}{interval}</td>"


def comparison_cell(c: Comparison, with_p: bool = True) -> str:
    attrs = _attrs(
        compare_metric=c.metric,
        variant=c.variant,
        baseline=c.baseline,
        n=c.n,
        value=_exact(c.mean_diff),
        low=_exact(c.low),
        high=_exact(c.high),
        p=_exact(c.p_value) if c.p_value is not None else "undefined",
    )
    if c.n == 0:
        return f"<td{attrs}>–</td>"

    def sign(v: float) -> str:
        return ("+" if v > 0 else "") + stats.fmt(v)

    text = sign(c.mean_diff)
    if c.interval_defined:
        text += f'<br><span class="ci">[{sign(c.low)}, {sign(c.high)}]</span>'
    if with_p:
        text += f'<br><span class="p">p {esc(stats.format_p(c.p_value))}</span>'
    return f"<td{attrs}>{text}</td>"


def table(head: Sequence[str], body: Iterable[str], caption: str = "", css: str = "") -> str:
    cap = f"<caption>{caption}</caption>" if caption else ""
    cls = f' class="{css}"' if css else ""
    heads = "".join(f'<th scope="col">{h}</th>' for h in head)
    return (
        f'<div class="scroll"><table{cls}>{cap}<thead><tr>{heads}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table></div>"
    )


def image(png: bytes, alt: str, caption: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return (
        f'<figure><img src="data:image/png;base64,{data}" alt="{esc(alt)}">'
        f"<figcaption>{caption}</figcaption></figure>"
    )


def _group_label(key: GroupKey, grid_field: str | None) -> str:
    variant, value = key
    return variant if value is None else f"{variant} · {grid_field}={value}"


def _value_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "none"
    return str(value)


# --------------------------------------------------------------------------- sections
def grid_sentence(
    summaries: Mapping[GroupKey, Mapping[str, Summary]], order: Sequence[str], grid_field: str
) -> str:
    """The mean accuracy gap at each grid value, one line per variant."""
    lines = []
    for variant in order:
        values = sorted((k[1] for k in summaries if k[0] == variant), key=_sortable)
        if values:
            gaps = ", ".join(
                f"{esc(v)}: {stats.fmt(summaries[(variant, v)][stats.GAP_METRIC].mean)}" for v in values
            )
            lines.append(f"<li><strong>{esc(variant)}</strong>: {gaps}</li>")
    return (
        f"<p>Mean final accuracy gap at each {esc(grid_field)}:</p><ul>{''.join(lines)}</ul>" if lines else ""
    )


def question_section(
    data: StudyData,
    order: list[str],
    baseline: str | None,
    comparisons: Mapping[str, Mapping[str, Comparison]],
    summaries: Mapping[GroupKey, Mapping[str, Summary]],
    grid_field: str | None,
) -> str:
    rows = data.rows
    complete = len(stats.completed(rows))
    failed = sum(r.get("status") == "failed" for r in rows)
    other = len(rows) - complete - failed
    seeds = sorted({seed for r in rows if (seed := r.get("seed")) is not None})
    description = (data.study.get("spec") or {}).get("description")
    parts = [
        f'<p class="question">{esc(QUESTION)}</p>',
        f"<p>{esc(description)}</p>" if description else "",
        f"<p>{len(rows)} runs: {complete} complete, {failed} failed"
        + (f", {other} not finished" if other else "")
        + f"; {len(order)} variants × {len(seeds)} seeds"
        + (f"; baseline <strong>{esc(baseline)}</strong>" if baseline else "")
        + ".</p>",
    ]
    if grid_field:
        parts.append(grid_sentence(summaries, order, grid_field))
    if not comparisons:
        parts.append("<p>One variant: no remedy to compare with a baseline.</p>")
    else:
        parts.append(headline(comparisons))
    return "<section><h2>Question</h2>" + "".join(parts) + "</section>"


def headline(comparisons: Mapping[str, Mapping[str, Comparison]]) -> str:
    """The answer: remedies judged by the valid accuracy of the model a run returns, beyond
    seed noise after Holm's adjustment for the number compared; a narrower gap with a lower
    accuracy named as under-fitting; when nothing is told apart, the seeds it would take."""
    acc, gap = stats.HEADLINE_METRIC, stats.GAP_METRIC
    m = sum(c[acc].p_value is not None for c in comparisons.values())
    better = [v for v, c in comparisons.items() if c[acc].tells_apart and c[acc].mean_diff > 0]
    better.sort(key=lambda v: -comparisons[v][acc].mean_diff)
    under = [
        v
        for v, c in comparisons.items()
        if c[acc].tells_apart and c[acc].mean_diff < 0 and c[gap].mean_diff < 0
    ]

    def item(v: str) -> str:
        c, g = comparisons[v][acc], comparisons[v][gap]
        return (
            f"<li><strong>{esc(v)}</strong>: final valid accuracy {stats.fmt(c.mean_diff, 3)} "
            f"(95% interval [{stats.fmt(c.low)}, {stats.fmt(c.high)}], adjusted p "
            f"{esc(stats.format_p(c.p_adjusted))}, n={c.n}); gap {stats.fmt(g.mean_diff)}</li>"
        )

    adjusted = f"after adjusting for the {m} remedies compared (Holm)"
    parts = []
    if better:
        parts.append(
            "<p>Remedies whose returned model has a higher valid accuracy than the baseline's, "
            f"beyond seed noise {adjusted}:</p><ul>{''.join(item(v) for v in better)}</ul>"
        )
    else:
        candidates = [
            v for v, c in comparisons.items() if math.isfinite(c[acc].mean_diff) and c[acc].mean_diff > 0
        ]
        need = ""
        if candidates:
            top = max(candidates, key=lambda v: comparisons[v][acc].mean_diff)
            seeds = comparisons[top][acc].seeds_needed
            if seeds is not None:
                need = (
                    f" The largest gain, <strong>{esc(top)}</strong>'s "
                    f"{stats.fmt(comparisons[top][acc].mean_diff)}, would take about {seeds} seeds to "
                    "detect (80 % power, paired t-test at 5 %, this study's paired std)."
                )
        parts.append(
            "<p>No remedy raises the returned model's valid accuracy by more than seed noise allows "
            f"to tell, {adjusted}.{need}</p>"
        )
    if under:
        parts.append(
            "<p>Narrower gap but lower valid accuracy, which is under-fitting, not a cure: "
            + ", ".join(f"<strong>{esc(v)}</strong>" for v in under)
            + ".</p>"
        )
    return "".join(parts)


def recipe_section(data: StudyData, baseline: str | None, grid_field: str | None, grid: list[Any]) -> str:
    spec = data.study.get("spec") or {}
    base = spec_base(spec)
    base_rows = [
        f'<tr><th scope="row">{esc(k)}</th><td>{esc(_value_text(v))}</td></tr>' for k, v in base.items()
    ]
    out = ["<section><h2>Recipe</h2>"]
    if base_rows:
        out.append("<h3>Base config</h3>" + table(("field", "value"), base_rows, css="kv"))
    variant_rows = []
    for name, overrides in spec_variants(spec):
        text = ", ".join(f"{k} = {_value_text(v)}" for k, v in overrides.items()) or "(base config)"
        mark = ' class="baseline"' if name == baseline else ""
        variant_rows.append(f'<tr{mark}><th scope="row">{esc(name)}</th><td>{esc(text)}</td></tr>')
    if variant_rows:
        out.append("<h3>Variants</h3>" + table(("variant", "overrides"), variant_rows, css="kv"))
    if grid_field:
        out.append(
            f"<p>Grid: every variant at <code>{esc(grid_field)}</code> = "
            f"{esc(', '.join(str(v) for v in grid))}.</p>"
        )
    seeds = data.study.get("seeds") or spec.get("seeds")
    if seeds:
        out.append(f"<p>Seeds: {esc(', '.join(str(s) for s in seeds))}.</p>")
    out.append("</section>")
    return "".join(out)


def remedies_section(
    comparisons: Mapping[str, Mapping[str, Comparison]],
    summaries: Mapping[GroupKey, Mapping[str, Summary]],
    baseline: str | None,
    order: list[str],
    grid_field: str | None,
) -> str:
    out = ["<section><h2>Remedies against the baseline</h2>"]
    if comparisons:
        out.append(
            f"<p>Each remedy minus <strong>{esc(baseline)}</strong>, paired on seed"
            + (" and grid value" if grid_field else "")
            + ": mean difference, its 95% t-interval and the paired t-test p-value. Sorted by how "
            "much the remedy closes the accuracy gap (largest first). A negative gap difference "
            "is a narrower gap.</p>"
        )
        rows = []
        for variant in stats.rank_by_gap(comparisons):
            c = comparisons[variant]
            gap = c[stats.GAP_METRIC]
            css = "apart" if gap.tells_apart else "same"
            rows.append(
                f'<tr class="{css}" data-remedy="{esc(variant)}">'
                f'<th scope="row">{esc(variant)}</th>'
                f'<td data-compare-metric="gap_reduction" data-variant="{esc(variant)}" '
                f'data-value="{_exact(stats.gap_reduction(gap))}">{stats.fmt(stats.gap_reduction(gap))}</td>'
                + "".join(comparison_cell(c[m]) for m in stats.COMPARED)
                + f'<td class="verdict">{esc(stats.verdict(gap))}</td></tr>'
            )
        head: tuple[str, ...] = (
            "remedy",
            "gap closed",
            "Δ gap (acc)",
            "Δ peak valid acc",
            "Δ gap (loss)",
            "Δ lowest valid loss",
            "verdict",
        )
        out.append(table(head, rows, css="compare"))
    else:
        out.append("<p>No remedy to compare: the study has one variant.</p>")
    out.append(
        "<h3>Every variant over seeds</h3><p>mean ± sample std (n−1) and, below, the 95% "
        "t-interval of the mean; completed runs only. Best: over all epochs. Final: the "
        "model the run returns (the restored best epoch under early stopping, else the "
        "last). Stop epoch: the epoch early stopping ended the run, else the last epoch "
        "trained.</p>"
    )
    keys = sorted(
        summaries, key=lambda k: (order.index(k[0]) if k[0] in order else len(order), _sortable(k[1]))
    )
    body = []
    for key in keys:
        variant, value = key
        css = ' class="baseline"' if variant == baseline else ""
        n = max(s.n for s in summaries[key].values())
        grid_cell = f"<td>{esc(value)}</td>" if grid_field else ""
        body.append(
            f'<tr{css}><th scope="row">{esc(variant)}</th>{grid_cell}<td>{n}</td>'
            + "".join(summary_cell(m, variant, value, summaries[key][m]) for m in TABLE_METRICS)
            + "</tr>"
        )
    head = (
        ("variant",)
        + ((esc(grid_field),) if grid_field else ())
        + ("n",)
        + tuple(esc(stats.METRICS[m]) for m in TABLE_METRICS)
    )
    out.append(table(head, body, css="variants"))
    out.append("</section>")
    return "".join(out)


def _sortable(value: Any) -> tuple[int, Any, str]:
    return (0, value, "") if isinstance(value, (int, float)) else (1, 0, str(value))


def plots_section(
    data: StudyData,
    summaries: Mapping[GroupKey, Mapping[str, Summary]],
    baseline: str | None,
    order: list[str],
    grid_field: str | None,
) -> str:
    out = ["<section><h2>Pictures</h2>"]
    keys = sorted(
        summaries, key=lambda k: (order.index(k[0]) if k[0] in order else len(order), _sortable(k[1]))
    )
    gap_rows = [(_group_label(k, grid_field), summaries[k]["final_gap_acc"]) for k in keys]
    if gap_rows:
        png = figure_png(study_plots.gap_figure(gap_rows, baseline))
        out.append(
            image(
                png,
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
        png = figure_png(study_plots.grid_figure(by_variant, grid_field, baseline))
        out.append(
            image(
                png,
                f"accuracy against {grid_field}",
                f"Final train (dashed) and valid (solid) accuracy against {esc(grid_field)}, "
                "and the gap between them; bars are 95% t-intervals over seeds.",
            )
        )
    curves = stats.curves_by_group(data.rows, data.histories)
    for title, panels in curve_figures(keys, curves, grid_field):
        png = figure_png(study_plots.learning_curves_figure(panels, title))
        out.append(
            image(
                png,
                "learning curves" + (f", {title}" if title else ""),
                "Learning curves"
                + (f", {esc(title)}" if title else " per variant")
                + ": train dashed, valid solid; the line is the mean over seeds, the band ± one "
                "std. Runs stopped early drop out: at each epoch the mean is over the seeds "
                "still training then (no band where one remains).",
            )
        )
    out.append("</section>")
    return "".join(out)


def curve_figures(
    keys: Sequence[GroupKey], curves: Mapping[GroupKey, Any], grid_field: str | None
) -> list[tuple[str, dict[str, Any]]]:
    """[(title, {row label: curves})]: one figure, or with a grid one per grid value
    (a single variant's grid: one figure, a row per value)."""
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


def left_out_section(study: Mapping[str, Any]) -> str:
    """The variants the study's model cannot take, and why (nothing when none was left out)."""
    left = study.get("left_out") or []
    if not left:
        return ""
    body = [
        f'<tr data-left-out="{esc(e["variant"])}"><th scope="row">{esc(e["variant"])}</th>'
        f"<td>{esc(e['reason'])}</td></tr>"
        for e in left
    ]
    return (
        "<section><h2>Left out</h2><p>Variants this model cannot take, not run:</p>"
        + table(("variant", "why"), body, css="failed")
        + "</section>"
    )


def runs_section(rows: Sequence[Mapping[str, Any]], grid_field: str | None) -> str:
    failed = [r for r in rows if r.get("status") == "failed"]
    unfinished = [r for r in rows if r.get("status") not in ("complete", "failed")]
    out = ["<section><h2>Failed runs</h2>"]
    if failed:
        body = [
            f'<tr data-run-id="{esc(r["run_id"])}"><th scope="row">{esc(r["run_id"])}</th>'
            f"<td>{esc(r.get('variant'))}</td><td>{esc(r.get('seed'))}</td>"
            f"<td><pre>{esc(r.get('error') or 'no error recorded')}</pre></td></tr>"
            for r in failed
        ]
        out.append(table(("run", "variant", "seed", "error"), body, css="failed"))
    else:
        out.append("<p>None.</p>")
    if unfinished:
        listing = ", ".join(f"{r['run_id']} ({r.get('status')})" for r in unfinished)
        out.append(f"<p>Not finished: {esc(listing)}.</p>")
    body = []
    for r in rows:
        cells = "".join(
            f"<td{_attrs(run_id=r['run_id'], metric=m, value=_exact(stats.metric_value(r, m)))}>"
            f"{stats.fmt(stats.metric_value(r, m), _digits(m))}</td>"
            for m in RUN_COLUMNS
        )
        grid_cell = f"<td>{esc(r.get('grid_value'))}</td>" if grid_field else ""
        body.append(
            f'<tr><th scope="row">{esc(r["run_id"])}</th><td>{esc(r.get("variant"))}</td>'
            f"<td>{esc(r.get('seed'))}</td>{grid_cell}<td>{esc(r.get('status'))}</td>"
            f"<td>{esc(r.get('stop_reason') or '–')}</td>{cells}</tr>"
        )
    head = (
        ("run", "variant", "seed")
        + ((esc(grid_field),) if grid_field else ())
        + ("status", "stop reason")
        + tuple(esc(stats.METRICS.get(m, m)) for m in RUN_COLUMNS)
    )
    out.append(f"<details><summary>All {len(rows)} runs</summary>{table(head, body, css='runs')}</details>")
    out.append("</section>")
    return "".join(out)


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


def environment_section(study: Mapping[str, Any]) -> str:
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
    body = [
        f'<tr><th scope="row">{esc(k)}</th><td>{esc(_value_text(v))}</td></tr>'
        for k, v in facts
        if v not in (None, "")
    ]
    return "<section><h2>Environment</h2>" + table(("what", "value"), body, css="kv") + "</section>"


CSS = """
*{box-sizing:border-box}
html{-webkit-text-size-adjust:100%}
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;line-height:1.45;color:#1b1b1b;
background:#fff;max-width:64rem;margin:0 auto;padding:0.75rem;overflow-wrap:anywhere}
h1{font-size:1.5rem;margin:0.5rem 0}h2{font-size:1.2rem;border-bottom:1px solid #ddd;margin-top:2rem}
h3{font-size:1rem}
.question{font-size:1.1rem;font-weight:600}
.scroll{overflow-x:auto;max-width:100%;-webkit-overflow-scrolling:touch;margin:0.5rem 0}
table{border-collapse:collapse;font-size:0.85rem;font-variant-numeric:tabular-nums}
th,td{border:1px solid #ddd;padding:0.25rem 0.45rem;vertical-align:top;text-align:right;overflow-wrap:normal}
th[scope=row],thead th{text-align:left;white-space:nowrap}
table.kv td{text-align:left;overflow-wrap:anywhere}
td.verdict{text-align:left;min-width:12rem}
tr.baseline th{color:#b22222}
tr.apart td.verdict{color:#0a6b2d;font-weight:600}
tr.same td.verdict{color:#666}
.ci,.p{color:#666;font-size:0.78rem;white-space:nowrap}
figure{margin:1rem 0}img{max-width:100%;height:auto;display:block}
figcaption{font-size:0.85rem;color:#444}
pre{white-space:pre-wrap;overflow-wrap:anywhere;margin:0;text-align:left;font-size:0.8rem;max-width:40rem}
code{font-size:0.9em}
details summary{cursor:pointer;margin:0.5rem 0}
"""


def render_report(data: StudyData) -> str:
    """The whole page for one study, as a string."""
    spec = data.study.get("spec") or {}
    order = stats.variant_order(data.rows, [name for name, _ in spec_variants(spec)])
    baseline = stats.baseline_name(order)
    grid_field, grid = spec_grid(spec, data.rows)
    summaries = stats.group_summaries(data.rows)
    comparisons = stats.compare_all(data.rows, baseline=baseline, spec_variants=order)
    body = "".join(
        (
            question_section(data, order, baseline, comparisons, summaries, grid_field),
            recipe_section(data, baseline, grid_field, grid),
            remedies_section(comparisons, summaries, baseline, order, grid_field),
            plots_section(data, summaries, baseline, order, grid_field),
            left_out_section(data.study),
            runs_section(data.rows, grid_field),
            environment_section(data.study),
        )
    )
    title = f"overfitlab study {data.name}"
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)}</title><style>{CSS}</style></head>"
        f'<body data-study="{esc(data.name)}"><header><h1>Study <code>{esc(data.name)}</code></h1></header>'
        f"<main>{body}</main></body></html>\n"
    )


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
