"""A study read back for its report: its record, runs and histories."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import stats, store
from ..errors import OverfitlabError
from ..history import History
from ..store import HISTORY_JSON

QUESTION = "Which remedy makes the returned model generalise better, and by how much?"
REPORT_FILE = "report.html"
TEMPLATE = "study.html.j2"  # in overfitlab/templates/
INDEX_FILE = "index.sqlite"

# Columns of the per-variant table, in order.
VARIANT_TABLE_COLUMNS = (
    "final_valid_acc",  # the returned model's: what the answer is about
    "peak_valid_acc",
    "lowest_valid_loss",
    "final_gap_acc",
    "final_gap_loss",
    "best_epoch",
    "stop_epoch",
    "params",
    "seconds",
)
# The words heading the comparison table's columns: remedy − baseline on each of stats.COMPARED.
COMPARISON_HEADERS = {
    "final_valid_acc": "Δ final valid acc (model returned)",
    "final_gap_acc": "Δ final gap (acc)",
    "peak_valid_acc": "Δ peak valid acc (any epoch, oracle)",
    "final_gap_loss": "Δ final gap (loss)",
    "lowest_valid_loss": "Δ lowest valid loss (any epoch, oracle)",
}
# Columns of the per-run table.
RUN_TABLE_COLUMNS = (
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
    # start-up: SQLite only for a study read from the index
    from .index import RunIndex

    with RunIndex(index_path) as index:
        study = index.study(name)
        if study is None:
            known = ", ".join(sorted(s["name"] for s in index.studies())) or "none"
            raise OverfitlabError(f"no study {name!r} in {index_path}: known studies are {known}")
        rows = index.runs(name)
    # What the index does not keep: the variants left out (the model could not take them).
    study_json = runs_dir / name / "study.json"
    if study_json.is_file():
        study = {**study, "left_out": store.read_json(study_json).get("left_out") or []}
    return StudyData(name, study, rows, load_histories(runs_dir, rows))


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
