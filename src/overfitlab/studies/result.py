"""``StudyResult``: a study's runs, its per-variant table and comparisons."""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..metrics import SHORT_LABELS
from ..sequential import Decision
from ..viz.html import box, image

if TYPE_CHECKING:
    # start-up: matplotlib only for a notebook's picture
    from ..history import History


TABLE_METRICS = ("final_valid_acc", "final_gap_acc", "peak_valid_acc", "lowest_valid_loss")


@dataclass
class StudyResult:
    name: str
    study_dir: Path
    status: str  # complete | failed (some runs failed)
    runs: list[dict[str, Any]]  # index rows, in planned order
    table: list[dict[str, Any]]  # per (variant, grid value): n and mean/std of TABLE_METRICS
    wall_seconds: float
    report: Path | None = None
    left_out: list[dict[str, str]] = field(default_factory=list)  # {"variant", "reason"}
    # Which remedy helps: one decision per remedy compared, largest effect first.
    decisions: list[Decision] = field(default_factory=list)
    question: str = ""  # what the decisions answer, with the design's numbers

    def ordered_table(self) -> list[dict[str, Any]]:
        """The per-variant table, the baseline first and the remedies by their effect on the
        returned model's valid accuracy, largest first (planned order without decisions)."""
        rank = {d.variant: i for i, d in enumerate(self.decisions)}
        return sorted(self.table, key=lambda e: rank.get(e["variant"], -1))

    def answer_lines(self) -> list[str]:
        """The answer as the terminal prints it: the question, then one line per remedy."""
        if not self.decisions:
            return []
        width = max(len(d.variant) for d in self.decisions)
        return [self.question] + [f"  {d.variant:<{width}}  {d.sentence()}" for d in self.decisions]

    @property
    def failed(self) -> list[dict[str, Any]]:
        return [r for r in self.runs if r["status"] != "complete"]

    def __repr__(self) -> str:
        return (
            f"StudyResult({self.name!r}, {self.status}, {len(self.runs)} runs, "
            f"{len(self.failed)} not complete, {self.wall_seconds:.1f} s, study_dir={self.study_dir})"
        )

    def _repr_html_(self) -> str:
        return study_html(self)

    def to_dict(self) -> dict[str, Any]:
        # start-up: numpy and scipy only once a study is done
        from ..stats import comparisons_table

        return {
            "study": self.name,
            "study_dir": str(self.study_dir),
            "status": self.status,
            "runs": len(self.runs),
            "complete": len(self.runs) - len(self.failed),
            "failed": [{"run_id": r["run_id"], "error": r["error"]} for r in self.failed],
            "left_out": self.left_out,
            "table": self.table,
            "question": self.question,
            "decisions": [decision_dict(d) for d in self.decisions],
            "comparisons": comparisons_table(self.runs),
            "wall_seconds": round(self.wall_seconds, 3),
            "report": str(self.report) if self.report else None,
        }


def variant_table(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Per (variant, grid value), in planned order: completed runs, failures, mean and std."""
    # start-up: numpy and scipy only once a study is done
    from ..stats import group_summaries

    summaries = group_summaries(rows, TABLE_METRICS)

    def clean(x: object) -> float | None:
        return round(x, 6) if isinstance(x, float) and math.isfinite(x) else None

    table = []
    for key in dict.fromkeys((r["variant"], r.get("grid_value")) for r in rows):
        group = [r for r in rows if (r["variant"], r.get("grid_value")) == key]
        entry = {
            "variant": key[0],
            "grid_value": key[1],
            "n": sum(r["status"] == "complete" for r in group),
            "failed": sum(r["status"] == "failed" for r in group),
        }
        for metric in TABLE_METRICS:
            summary = summaries.get(key, {}).get(metric)
            entry[metric] = {
                "mean": clean(summary.mean) if summary else None,
                "std": clean(summary.std) if summary else None,
            }
        table.append(entry)
    return table


def study_html(result: StudyResult) -> str:

    head = "".join(
        f"<th>{html.escape(h)}</th>" for h in ["variant", "n", *[SHORT_LABELS[m] for m in TABLE_METRICS]]
    )

    def cell(stat: Mapping[str, Any]) -> str:
        if stat["mean"] is None:
            return "–"
        return f"{stat['mean']:.4f}" + ("" if stat["std"] is None else f" ± {stat['std']:.4f}")

    body = "".join(
        "<tr>"
        + f"<th style='text-align:left'>{html.escape(_variant(e))}</th><td>{e['n']}</td>"
        + "".join(f"<td>{html.escape(cell(e[m]))}</td>" for m in TABLE_METRICS)
        + "</tr>"
        for e in result.ordered_table()
    )
    note = (
        f"<p>{len(result.runs)} runs, {result.wall_seconds:.1f} s, "
        f"{len(result.failed)} not complete · {html.escape(str(result.study_dir))}</p>"
    )
    answer = ""
    if result.decisions:
        items = "".join(
            f"<li><strong>{html.escape(d.variant)}</strong>: {html.escape(d.sentence())}</li>"
            for d in result.decisions
        )
        answer = f"<p>{html.escape(result.question)}</p><ul>{items}</ul>"
    parts = [f"{answer}<table><tr>{head}</tr>{body}</table>{note}"]
    png = study_curves_png(result.runs)
    if png is not None:
        parts.append(image(png, "validation accuracy of every variant"))
    return box(f"study {result.name}", *parts)


def _variant(entry: Mapping[str, Any]) -> str:
    grid = entry.get("grid_value")
    return str(entry["variant"]) + ("" if grid is None else f" @ {grid}")


def study_curves_png(rows: Sequence[Mapping[str, Any]]) -> bytes | None:
    """Every variant's mean validation accuracy against epochs, on one pair of axes."""
    # start-up: matplotlib only for a notebook's picture
    from ..curves import mean_curve
    from ..history import History
    from ..viz.plots import figure_png, integer_epochs, new_figure

    histories: dict[str, list[History]] = {}
    for row in rows:
        path = Path(row.get("run_dir") or "") / "history.json"
        if row.get("status") == "complete" and path.is_file():
            label = _variant(row)
            histories.setdefault(label, []).append(History.from_json(path.read_text(encoding="utf-8")))
    if not histories:
        return None
    fig, ax = new_figure(figsize=(6, 3.6))
    for number, (label, runs) in enumerate(histories.items()):
        curve = mean_curve(runs, "valid_acc")
        ax.plot(
            curve.epochs,
            curve.mean,
            # The first variant is the baseline: black and thicker; ten colours for the rest.
            color="black" if number == 0 else f"C{(number - 1) % 10}",
            linewidth=2 if number == 0 else 1,
            label=label,
        )
    ax.set_xlabel("epoch")
    ax.set_ylabel("valid accuracy (mean over seeds)")
    integer_epochs(ax)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncols=2)
    return figure_png(fig)


def decision_dict(d: Decision) -> dict[str, Any]:
    """A decision as JSON: the answer, the effect and its interval, and the same sentence the
    terminal, the report and the notebook show."""

    def number(x: float) -> float | None:
        return round(x, 6) if math.isfinite(x) else None

    return {
        "variant": d.variant,
        "answer": str(d.answer),
        "effect": number(d.effect),
        "low": number(d.low),
        "high": number(d.high),
        "seeds": d.seeds,
        "stages": d.stages,
        "stopped": d.stopped,
        "seeds_to_settle": d.seeds_to_settle,
        "sentence": d.sentence(),
    }
