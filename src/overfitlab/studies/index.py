"""The run index: one SQLite file, ``runs/index.sqlite``, that every study writes to.

The run folders are the truth; the index is a queryable copy of them that
``rebuild`` can recreate at any time. A row per run (``runs``) and per study
(``studies``), read back as plain dicts::

    index = RunIndex("runs/index.sqlite")
    index.runs("remedies-demo")      # [{"run_id": "remedies-demo/l2-s0", "peak_valid_acc": ..., ...}]
    index.study("remedies-demo")     # {"name": ..., "spec": {...}, "environment": {...}, ...}

Metric columns of a run (None when the run has no such epoch):

- ``peak_valid_acc``, ``lowest_valid_loss``: the highest valid accuracy and the
  lowest valid loss over all epochs (each its own best, possibly at two epochs);
- ``final_epoch``: the epoch of the model the run returns, the best epoch when
  early stopping restored it, else the last epoch;
- ``final_*``: the history at ``final_epoch``; ``final_gap_acc`` =
  train − valid accuracy, ``final_gap_loss`` = valid − train loss.

Several processes may write at once (two studies, a study and ``runs
rebuild``): the file is in WAL mode, every write is one short ``BEGIN
IMMEDIATE`` transaction, and a writer waits up to ``busy_timeout`` for another
to finish. WAL needs a local file system (not NFS).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shlex
import sqlite3
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from .. import store
from ..config import load_toml, to_dict
from ..errors import OverfitlabError
from ..metrics import outcome
from .spec import RunPlan

INDEX = "index.sqlite"
STUDY_JSON = "study.json"
STATUS_JSON = "status.json"  # written last in a study's run folder: the run's outcome
BUSY_TIMEOUT_MS = 60_000

# interrupted: Ctrl-C ended it; resumable (`train --resume`, `study --resume`), not a failure.
STATUSES = ("pending", "running", "complete", "interrupted", "failed")
# The study column of runs made by `overfitlab train` (a name no study can take: parentheses).
SINGLE_RUNS = "(train)"

# Column name → SQLite type; JSON columns hold dicts/lists/any scalar as JSON text.
RUN_COLUMNS = {
    "run_id": "TEXT PRIMARY KEY",
    "study": "TEXT NOT NULL",
    "variant": "TEXT",
    "seed": "INTEGER",
    "grid_field": "TEXT",
    "grid_value": "JSON",
    "config": "JSON",
    "status": "TEXT NOT NULL",
    "error": "TEXT",
    "started_at": "TEXT",
    "ended_at": "TEXT",
    "seconds": "REAL",
    "epochs_run": "INTEGER",
    "best_epoch": "INTEGER",
    "stopped_epoch": "INTEGER",
    "stop_reason": "TEXT",
    "final_epoch": "INTEGER",
    "peak_valid_acc": "REAL",
    "lowest_valid_loss": "REAL",
    "final_train_acc": "REAL",
    "final_valid_acc": "REAL",
    "final_train_loss": "REAL",
    "final_valid_loss": "REAL",
    "final_gap_acc": "REAL",
    "final_gap_loss": "REAL",
    "params": "INTEGER",
    "run_dir": "TEXT",
}
STUDY_COLUMNS = {
    "name": "TEXT PRIMARY KEY",
    "spec": "JSON",
    "created_at": "TEXT",
    "seeds": "JSON",
    "backend": "TEXT",
    "workers": "INTEGER",
    "threads": "INTEGER",
    "wall_seconds": "REAL",
    "status": "TEXT",
    "environment": "JSON",
}
# Not returned: keeps rows in the order the study planned them (variants as the spec lists them).
_POSITION = "position"


def _schema() -> str:
    def table(name: str, columns: Mapping[str, str], extra: str = "") -> str:
        # JSON columns are TEXT in SQLite: a declared type "JSON" would get NUMERIC
        # affinity and turn the text '300' into the integer 300.
        body = ", ".join(f"{col} {'TEXT' if kind == 'JSON' else kind}" for col, kind in columns.items())
        return f"CREATE TABLE IF NOT EXISTS {name} ({body}{extra})"

    return ";\n".join(
        [
            table("studies", STUDY_COLUMNS),
            table("runs", RUN_COLUMNS, f", {_POSITION} INTEGER"),
            "CREATE INDEX IF NOT EXISTS runs_by_study ON runs (study, position)",
        ]
    )


def _finite(value: Any) -> Any:
    return None if isinstance(value, float) and not math.isfinite(value) else value


class RunIndex:
    """The runs and studies of one runs folder, in ``<runs_dir>/index.sqlite``."""

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)
        store.ensure_folder(self.path.parent, "runs folder", "--runs-dir")
        try:
            self._db = sqlite3.connect(
                self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None
            )  # transactions are explicit
            self._db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            self._db.execute("PRAGMA journal_mode = WAL")
            # NORMAL is durable across process crashes in WAL mode; only power loss may drop
            # the last commits, which `rebuild` recovers from the run folders.
            self._db.execute("PRAGMA synchronous = NORMAL")
            with self._transaction():  # executescript would commit on its own
                # Inside the write lock: two processes opening a new index see one schema.
                stale = self._stale_tables()
                for table in stale:
                    self._db.execute(f"DROP TABLE {table}")
                for statement in _schema().split(";\n"):
                    self._db.execute(statement)
        except sqlite3.DatabaseError as err:
            raise _open_error(self.path, err) from None
        if stale:
            # Written by an older overfitlab with other columns: the folders are the truth.
            self.rebuild(self.path.parent)

    def _stale_tables(self) -> list[str]:
        """Tables whose columns are not this version's (an index from an older overfitlab)."""
        stale = []
        for table, columns in (("studies", list(STUDY_COLUMNS)), ("runs", [*RUN_COLUMNS, _POSITION])):
            found = [row[1] for row in self._db.execute(f"PRAGMA table_info({table})")]
            if found and found != columns:
                stale.append(table)
        return stale

    @classmethod
    def of(cls, runs_dir: str | os.PathLike[str]) -> RunIndex:
        return cls(Path(runs_dir) / INDEX)

    # ------------------------------------------------------------------ plumbing
    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> RunIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        # IMMEDIATE takes the write lock at once: two writers never both read, then
        # deadlock trying to upgrade to writing.
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    @staticmethod
    def _encode(
        columns: Mapping[str, str], record: Mapping[str, Any], position: int | None = None
    ) -> dict[str, Any]:
        row = {}
        for col, kind in columns.items():
            value = record.get(col)
            row[col] = json.dumps(value, allow_nan=False) if kind == "JSON" else _finite(value)
        if columns is RUN_COLUMNS:
            row[_POSITION] = position
        return row

    @staticmethod
    def _decode(columns: Mapping[str, str], row: tuple[Any, ...], names: list[str]) -> dict[str, Any]:
        out = {}
        for name, value in zip(names, row, strict=True):
            if name not in columns:
                continue
            out[name] = json.loads(value) if columns[name] == "JSON" and value is not None else value
        return out

    def _insert(self, table: str, rows: list[dict[str, Any]], conflict: str = "") -> None:
        cols = list(rows[0])
        self._db.executemany(
            f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))}) {conflict}",
            [tuple(r[c] for c in cols) for r in rows],
        )

    # ------------------------------------------------------------------ runs
    def upsert_run(self, record: Mapping[str, Any]) -> None:
        """Insert or replace one run row (keys as ``runs()`` returns them; missing ones are None)."""
        self.upsert_runs([record])

    def upsert_runs(self, records: Iterable[Mapping[str, Any]]) -> None:
        """Several rows in one transaction. An optional ``position`` key orders a row within its
        study; without it, a row keeps the position it had."""
        rows = []
        for record in records:
            _check_run(record)
            rows.append(self._encode(RUN_COLUMNS, record, record.get(_POSITION)))
        if not rows:
            return
        updates = [f"{c} = excluded.{c}" for c in RUN_COLUMNS if c != "run_id"]
        updates.append(f"{_POSITION} = COALESCE(excluded.{_POSITION}, runs.{_POSITION})")
        with self._transaction():
            self._insert("runs", rows, f"ON CONFLICT (run_id) DO UPDATE SET {', '.join(updates)}")

    def runs(self, study: str | None = None) -> list[dict[str, Any]]:
        """Run rows, study by study, each study's runs in planned order."""
        where, args = ("WHERE study = ?", (study,)) if study is not None else ("", ())
        cursor = self._db.execute(
            f"SELECT {', '.join(RUN_COLUMNS)} FROM runs {where} "
            f"ORDER BY study, {_POSITION} IS NULL, {_POSITION}, run_id",
            args,
        )
        names = [d[0] for d in cursor.description]
        return [self._decode(RUN_COLUMNS, row, names) for row in cursor.fetchall()]

    def run(self, run_id: str) -> dict[str, Any] | None:
        cursor = self._db.execute(f"SELECT {', '.join(RUN_COLUMNS)} FROM runs WHERE run_id = ?", (run_id,))
        row = cursor.fetchone()
        return self._decode(RUN_COLUMNS, row, [d[0] for d in cursor.description]) if row else None

    # ------------------------------------------------------------------ studies
    def upsert_study(self, record: Mapping[str, Any]) -> None:
        if not record.get("name"):
            raise OverfitlabError("a study record needs a name")
        updates = ", ".join(f"{c} = excluded.{c}" for c in STUDY_COLUMNS if c != "name")
        with self._transaction():
            self._insert(
                "studies",
                [self._encode(STUDY_COLUMNS, record)],
                f"ON CONFLICT (name) DO UPDATE SET {updates}",
            )

    def studies(self) -> list[dict[str, Any]]:
        cursor = self._db.execute(f"SELECT {', '.join(STUDY_COLUMNS)} FROM studies ORDER BY created_at, name")
        names = [d[0] for d in cursor.description]
        return [self._decode(STUDY_COLUMNS, row, names) for row in cursor.fetchall()]

    def study(self, name: str) -> dict[str, Any] | None:
        cursor = self._db.execute(f"SELECT {', '.join(STUDY_COLUMNS)} FROM studies WHERE name = ?", (name,))
        row = cursor.fetchone()
        return self._decode(STUDY_COLUMNS, row, [d[0] for d in cursor.description]) if row else None

    # ------------------------------------------------------------------ rebuild
    def rebuild(self, runs_dir: str | os.PathLike[str]) -> int:
        """Recreate both tables from ``<runs_dir>/*/study.json``, the studies' run folders and the
        folders ``overfitlab train`` wrote (``<runs_dir>/*/summary.json``); return the run count."""
        studies, runs = [], []
        runs_dir = Path(runs_dir).resolve()
        for study_json in sorted(runs_dir.glob(f"*/{STUDY_JSON}")):
            document = store.read_json(study_json)
            studies.append(self._encode(STUDY_COLUMNS, study_record(document)))
            for position, plan in enumerate(document.get("runs", [])):
                run_dir = study_json.parent / plan["name"]
                row = _run_row(document["name"], plan, run_dir)
                runs.append(self._encode(RUN_COLUMNS, row, position))
        for summary_json in sorted(runs_dir.glob(f"*/{store.SUMMARY_JSON}")):
            if not (summary_json.parent / STUDY_JSON).exists():
                runs.append(self._encode(RUN_COLUMNS, single_run_record(summary_json.parent)))
        # One transaction: a reader sees the old index or the new one, never an empty one.
        with self._transaction():
            self._db.execute("DELETE FROM runs")
            self._db.execute("DELETE FROM studies")
            for table, rows in (("studies", studies), ("runs", runs)):
                if rows:
                    self._insert(table, rows)
        return len(runs)


def _open_error(path: Path, err: sqlite3.DatabaseError) -> OverfitlabError:
    """One line for an index that cannot be opened: unwritable, or corrupt (with the fix)."""
    text = str(err)
    if isinstance(err, sqlite3.OperationalError):
        if "readonly" in text or "unable to open" in text or "disk I/O" in text:
            return IndexNotWritable(
                f"the runs folder {path.parent} is not writable ({text}): pass a --runs-dir you can "
                "write to, or make that folder writable"
            )
        if "malformed" not in text:  # locked past busy_timeout, and the like: not the file's fault
            return OverfitlabError(f"run index {path} cannot be used now ({text}): try again")
    return IndexCorrupt(
        f"run index {path} is corrupt ({text}): run `overfitlab runs rebuild --runs-dir "
        f"{shlex.quote(str(path.parent))}`, which keeps it aside and rebuilds it from the run folders"
    )


class IndexCorrupt(OverfitlabError):
    """index.sqlite is not a usable SQLite database; ``rebuild`` recovers from the folders."""


class IndexNotWritable(OverfitlabError):
    """The runs folder (or the index in it) cannot be written."""


def _check_run(record: Mapping[str, Any]) -> None:
    unknown = set(record) - set(RUN_COLUMNS) - {_POSITION}
    if unknown:
        raise OverfitlabError(
            f"unknown run field(s) {', '.join(sorted(unknown))}: valid fields are {', '.join(RUN_COLUMNS)}"
        )
    for key in ("run_id", "study", "status"):
        if not record.get(key):
            raise OverfitlabError(f"a run record needs {key}")
    if record["status"] not in STATUSES:
        raise OverfitlabError(f"unknown run status {record['status']!r}: choose one of {', '.join(STATUSES)}")


def rebuild_index(runs_dir: str | os.PathLike[str]) -> tuple[int, int, Path | None]:
    """Recreate ``<runs_dir>/index.sqlite`` from the folders: (studies, runs, where a corrupt
    index was kept). A corrupt file is moved aside, never deleted: it may hold what a person
    wants to look at."""
    path = Path(runs_dir) / INDEX
    kept = None
    try:
        index = RunIndex(path)
    except IndexCorrupt:
        kept = path.with_name(f"{INDEX}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}")
        os.replace(path, kept)
        for suffix in ("-wal", "-shm"):  # the corrupt file's journal belongs to it
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        index = RunIndex(path)
    with index:
        runs = index.rebuild(runs_dir)
        return len(index.studies()), runs, kept


# --------------------------------------------------------------------------- records from folders
def study_record(document: Mapping[str, Any]) -> dict[str, Any]:
    """The ``studies`` row of a study.json document."""
    return {col: document.get(col) for col in STUDY_COLUMNS}


def _read_optional_json(path: Path) -> Any:
    try:
        return store.read_json(path)
    except OverfitlabError:  # absent or half-written by a killed process: the run is not done
        return None


def run_metrics(
    summary: Mapping[str, Any], epochs: list[Mapping[str, Any]], config: Mapping[str, Any]
) -> dict[str, Any]:
    """The metric columns of a run from its summary.json and history epochs (the numbers and
    their names are :mod:`overfitlab.metrics`', as in summary.txt)."""
    best_epoch = summary.get("best_epoch")
    restored = bool(config.get("early_stopping") and config.get("restore_best", True))
    return {
        "epochs_run": len(epochs),
        "stopped_epoch": summary.get("stopped_epoch"),
        "stop_reason": summary.get("stop_reason"),
        **outcome(epochs, best_epoch, restored),
        "params": summary.get("params"),
    }


def planned_record(study: str, plan: RunPlan, run_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The row of a run not done yet (pending): its identity and config, no metrics."""
    return _planned_row(study, plan.to_dict(), run_dir)  # the row is JSON: the plan's last typed step


def _planned_row(study: str, plan: Mapping[str, Any], run_dir: str | os.PathLike[str]) -> dict[str, Any]:
    record: dict[str, Any] = {col: None for col in RUN_COLUMNS}
    record.update(
        {
            "run_id": f"{study}/{plan['name']}",
            "study": study,
            "variant": plan.get("variant"),
            "seed": plan.get("seed"),
            "grid_field": plan.get("grid_field"),
            "grid_value": plan.get("grid_value"),
            "config": plan.get("config"),
            "status": "pending",
            "run_dir": str(run_dir),
        }
    )
    return record


def run_record(study: str, plan: RunPlan, run_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """A run's index row from its plan and its folder.

    The live study calls this and ``rebuild`` its JSON twin on study.json's ``runs``, so a
    rebuilt index equals the one the study wrote. A folder without ``status.json`` is a run
    not (or not fully) done: pending.
    """
    return _run_row(study, plan.to_dict(), run_dir)


def _run_row(study: str, plan: Mapping[str, Any], run_dir: str | os.PathLike[str]) -> dict[str, Any]:
    run_dir = Path(run_dir)
    record = _planned_row(study, plan, run_dir)
    status = _read_optional_json(run_dir / STATUS_JSON)
    if not status:
        return record
    record.update({k: status.get(k) for k in ("status", "error", "started_at", "ended_at", "seconds")})
    if (run_dir / store.CONFIG).is_file():
        # The resolved config train wrote: the model preset's values filled in.
        record["config"] = to_dict(load_toml(run_dir / store.CONFIG))
    summary = _read_optional_json(run_dir / store.SUMMARY_JSON)
    history = _read_optional_json(run_dir / store.HISTORY_JSON)
    if summary is not None:
        epochs = [e for e in (history or {}).get("epochs", [])]
        record.update(run_metrics(summary, epochs, record["config"] or {}))
    return record


def single_run_record(run_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The row of a run ``overfitlab train`` wrote (``run_id`` is its folder's name), from its
    folder: complete, or failed when interrupted or diverged (a resumed run becomes complete)."""
    run_dir = Path(run_dir).resolve()
    config = to_dict(load_toml(run_dir / store.CONFIG)) if (run_dir / store.CONFIG).is_file() else None
    record = _planned_row(
        SINGLE_RUNS,
        {"name": run_dir.name, "variant": run_dir.name, "seed": (config or {}).get("seed"), "config": config},
        run_dir,
    )
    record["run_id"] = run_dir.name
    summary = _read_optional_json(run_dir / store.SUMMARY_JSON)
    if summary is None:
        return record
    history = _read_optional_json(run_dir / store.HISTORY_JSON) or {}
    record.update(run_metrics(summary, history.get("epochs", []), config or {}))
    reason = summary.get("stop_reason")
    failed = reason in ("interrupted", "diverged")
    record.update(
        status=("interrupted" if reason == "interrupted" else "failed") if failed else "complete",
        seconds=summary.get("train_seconds"),
        error=f"{summary['stop_reason']}: {summary.get('stop_message') or ''}".strip(": ")
        if failed
        else None,
    )
    return record
