"""Studies: one base recipe, a few remedies, several seeds, every run measured the same way.

A spec names a base recipe (Config fields), variants (each a name and the
fields it changes), the seeds (the same for every variant: a paired design) and
optionally a grid over one field. ``expand`` turns it into runs; ``run_study``
trains them with ``overfitlab.run.train`` on a backend (``overfitlab.backends``)
and records each in the run index (``overfitlab.index``)::

    spec = preset("remedies", seeds=3)
    result = run_study(spec, "runs", "remedies-demo", backend="local")
    result.table        # per variant: n, mean and std of best valid acc, loss, final gap

A spec file (TOML)::

    name = "l2-sweep"            # default study name prefix (optional)
    seeds = 3                    # or a list: [0, 1, 2]
    [base]                       # Config fields, flat or in the config file's sections
    train_size = 300
    epochs = 30
    [[variant]]
    name = "baseline"
    [[variant]]
    name = "l2"
    l2 = 1e-3
    [grid]                       # optional: every variant at every value
    field = "train_size"
    values = [100, 300, 1000]

A field's override is applied in this order: base, variant, grid value, seed.
In TOML, which has no null, the string "none" sets an optional field back to
its default (``train_size = "none"``: the whole training set).

The study folder ``runs/<study>/`` holds ``study.json`` (spec, planned runs,
environment, wall time) and one run folder per run,
``<variant>[-<grid value>]-s<seed>/``, with ``status.json`` written last.

Resuming (``resume=True``, ``overfitlab study --resume NAME``) skips the runs
whose ``status.json`` says complete and redoes every other run from scratch:
its partial folder is deleted first. A run is short next to a study, and
starting over gives the same history as an uninterrupted run by construction
(same recipe, seed and threads), where resuming from a checkpoint would depend
on when the kill came. Failed runs are retried too.
"""

from __future__ import annotations

import contextlib
import math
import os
import platform
import shlex
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import backends, store
from .config import from_dict
from .errors import Interrupted, OverfitlabError
from .index import STUDY_JSON, RunIndex, planned_record, run_record, study_record
from .presets import ALL_REMEDIES, DATA_SIZES, PRESETS, REMEDIES, REMEDIES_BASE, preset
from .study_spec import (
    DEFAULT_SEEDS,
    GRID_KEYS,
    SPEC_KEYS,
    STUDY_FIELDS,
    Grid,
    RunPlan,
    StudySpec,
    Variant,
    check_overrides,
    expand,
    grid_token,
    load_spec,
    make_spec,
    parse_seeds,
    parse_spec,
    run_name,
)
from .study_worker import (
    data_key,
    execute_run,
    execute_shipped,
    execute_stacked,
    execute_task,
    land,
    message_of,
    now,
    ship,
    to_store,
)

if TYPE_CHECKING:
    from .data import DataSet

__all__ = [
    "ALL_REMEDIES",
    "DATA_SIZES",
    "DEFAULT_SEEDS",
    "GRID_KEYS",
    "PRESETS",
    "REMEDIES",
    "REMEDIES_BASE",
    "SPEC_KEYS",
    "STUDY_FIELDS",
    "Grid",
    "RunPlan",
    "StudyResult",
    "StudySpec",
    "Variant",
    "check_overrides",
    "execute_run",
    "execute_stacked",
    "execute_task",
    "expand",
    "load_spec",
    "make_spec",
    "parse_seeds",
    "parse_spec",
    "preset",
    "run_name",
    "run_study",
    "variant_table",
]

TABLE_METRICS = ("final_valid_acc", "final_gap_acc", "peak_valid_acc", "lowest_valid_loss")
DATA_FOLDER = "data"  # in a study folder: the DataSet given to run_study, as .npy files


def stacked_groups(plans: Sequence[Mapping[str, Any]], todo: Sequence[int]) -> list[tuple[list[int], bool]]:
    """The runs to do as tasks, in the order of ``todo``: (the seeds of one variant and grid
    value, True) where stacking can train that recipe (one seed left to redo is stacked
    alone, as its siblings were), ([one run], False) for every other run."""
    from .stacking import refusals

    groups: dict[tuple[str, str], list[int]] = {}
    tasks: list[tuple[list[int], bool]] = []
    for i in todo:
        plan = plans[i]
        if plan.get("error") or refusals(plan["config"]):
            tasks.append(([i], False))
            continue
        key = (plan["variant"], grid_token(plan["grid_value"]))
        if key not in groups:
            groups[key] = []
            tasks.append((groups[key], True))
        groups[key].append(i)
    return tasks


# --------------------------------------------------------------------------- the study
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

    @property
    def failed(self) -> list[dict[str, Any]]:
        return [r for r in self.runs if r["status"] != "complete"]

    def __repr__(self) -> str:
        return (
            f"StudyResult({self.name!r}, {self.status}, {len(self.runs)} runs, "
            f"{len(self.failed)} not complete, {self.wall_seconds:.1f} s, study_dir={self.study_dir})"
        )

    def _repr_html_(self) -> str:
        from .notebook import study_html

        return study_html(self)

    def to_dict(self) -> dict[str, Any]:
        from .stats import comparisons_table  # numpy and scipy, only once a study is done

        return {
            "study": self.name,
            "study_dir": str(self.study_dir),
            "status": self.status,
            "runs": len(self.runs),
            "complete": len(self.runs) - len(self.failed),
            "failed": [{"run_id": r["run_id"], "error": r["error"]} for r in self.failed],
            "left_out": self.left_out,
            "table": self.table,
            "comparisons": comparisons_table(self.runs),
            "wall_seconds": round(self.wall_seconds, 3),
            "report": str(self.report) if self.report else None,
        }


def variant_table(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Per (variant, grid value), in planned order: completed runs, failures, mean and std."""
    from .stats import group_summaries  # numpy and scipy, only once a study is done

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


@contextlib.contextmanager
def _study_lock(study_dir: Path, name: str) -> Iterator[None]:
    """One process per study at a time (a resume while the study still runs would redo its runs)."""
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks; don't run one study twice at once
        yield
        return
    with open(study_dir / ".lock", "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise OverfitlabError(
                f"study {name} is running in another process: wait for it to end, or stop it, before resuming"
            ) from None
        yield  # the lock ends with the file, even when the process is killed


def environment(resources: backends.Resources, device: str, versions: Mapping[str, str]) -> dict[str, Any]:
    import numpy
    import torch

    from . import __version__

    return {
        "overfitlab": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        **versions,
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_cores": resources.cores,
        "device": device,
        "threads": resources.threads,
        "backend": resources.backend,
        "workers": resources.workers,
    }


def shipped_data(plans: Sequence[Mapping[str, Any]], todo: Sequence[int]) -> Iterator[tuple[str, DataSet]]:
    """The data sets the runs to do read from files (all but the built-in digits, which every
    node has with scikit-learn), each loaded once here, by ``data_key``."""
    from .data import load_dataset
    from .run import data_options

    seen = set()
    for i in todo:
        plan = plans[i]
        if plan.get("error"):
            continue
        config = from_dict(plan["config"])
        key = data_key(config)
        if config.dataset != "digits" and key not in seen:
            seen.add(key)
            yield key, load_dataset(config.dataset, options=data_options(config))


def leave_out(plans: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    """The plans without the variants the model cannot take (a ``--batchnorm`` variant on a
    factory with no batchnorm keyword), and those variants with the reason: left out and said
    so in study.json and the report, never run to fail."""
    from .run import model_refusal

    reasons: dict[str, str | None] = {}
    for plan in plans:
        variant = plan["variant"]
        if variant not in reasons and not plan.get("error"):
            reasons[variant] = model_refusal(from_dict(plan["config"]))
    left = [{"variant": v, "reason": r} for v, r in reasons.items() if r is not None]
    refused = {entry["variant"] for entry in left}
    return [p for p in plans if p["variant"] not in refused], left


def _absolute_data_dir(plan: dict[str, Any]) -> dict[str, Any]:
    """A relative data_dir made absolute: Ray workers do not run in this directory."""
    data_dir = plan["config"].get("data_dir")
    if data_dir and not os.path.isabs(data_dir):
        plan["config"] = {**plan["config"], "data_dir": os.path.abspath(data_dir)}
    return plan


def _device_of(plans: Sequence[Mapping[str, Any]]) -> str:
    from .environment import resolve_device

    name = next((p["config"].get("device") or "auto" for p in plans if not p.get("error")), "auto")
    try:
        return str(resolve_device(name))
    except OverfitlabError:
        return name


def _write_report(runs_dir: Path, name: str) -> Path:
    from .report import write_report

    return write_report(runs_dir, name)


def _load_resumed(
    study_dir: Path, name: str, spec: StudySpec | None, threads: int | None, stack_seeds: bool
) -> tuple[dict[str, Any], StudySpec]:
    if not (study_dir / STUDY_JSON).is_file():
        known = sorted(p.parent.name for p in study_dir.parent.glob(f"*/{STUDY_JSON}"))
        raise OverfitlabError(
            f"no study {name!r} in {study_dir.parent} to resume: "
            f"known studies are {', '.join(known) or 'none'}"
        )
    document = store.read_json(study_dir / STUDY_JSON)
    stored = StudySpec.from_dict(document["spec"])
    if spec is not None and spec.to_dict() != stored.to_dict():
        raise OverfitlabError(
            f"study {name} was started with another spec: resume it without a "
            "spec, or start a new study with another --name"
        )
    if threads is not None and threads != document["threads"]:
        raise OverfitlabError(
            f"study {name} runs with {document['threads']} threads per run "
            f"(its numbers depend on it): resume without --threads"
        )
    if stack_seeds and not document.get("stack_seeds"):
        raise OverfitlabError(
            f"study {name} trains its seeds one by one (its numbers depend on it): "
            "resume without --stack-seeds"
        )
    return document, stored


def expected_cost(plan: Mapping[str, Any]) -> float:
    """Training images × epochs: a run's relative length, for scheduling (None = the whole set)."""
    config = plan.get("config") or {}
    return float(config.get("train_size") or 10**9) * float(config.get("epochs") or 1)


def on_written_data(spec: StudySpec, study_dir: Path) -> StudySpec:
    """The spec of a study given a DataSet in Python: every run reads the copy written into the
    study folder (``data/``, as ``arrays:FOLDER`` reads it), when it starts and when it resumes."""
    return spec.with_base({"dataset": f"arrays:{study_dir / DATA_FOLDER}", "data_dir": None})


def run_study(
    spec: StudySpec | None,
    runs_dir: str | os.PathLike[str],
    name: str | None = None,
    backend: str = "serial",
    workers: int | None = None,
    threads: int | None = None,
    address: str | None = None,
    resume: bool = False,
    progress: Callable[[dict[str, Any], int, int], None] | None = None,
    tensorboard: bool = False,
    report: bool = True,
    stack_seeds: bool = False,
    connect_timeout: float = backends.RAY_CONNECT_TIMEOUT,
    live: bool = False,
    mlflow: bool | str = False,
    data: DataSet | None = None,
) -> StudyResult:
    """Run (or with ``resume``, finish) a study into ``runs_dir/name``; record it in the index.

    ``data``, a DataSet built in Python, replaces the base recipe's data set: it is written
    once into the study folder (``data/``, as ``arrays:FOLDER`` reads it) and every worker
    memory-maps those files, so it is neither pickled per run nor held once per worker.

    With ``live``, a notebook shows the progress in place (runs done, per variant).
    With ``mlflow`` (True: the SQLite store in ``runs_dir``; a string: that tracking
    URI), each run is logged to MLflow from this process as it ends, nested under a
    parent run named after the study (``overfitlab.tracking``).

    ``threads`` (torch threads per run) defaults to the base recipe's, else 1 on
    every backend (``backends.DEFAULT_THREADS``), so the same study gives the same
    per-run numbers on each. ``progress(row, done,
    total)`` is called as each run ends. With ``report``, the HTML report is
    written at the end (``overfitlab.report``). ``spec`` may be None when resuming.
    With ``stack_seeds``, the seeds of each variant that stacking can train are
    trained at once (``overfitlab.stacking``: for GPUs; numbers equal up to
    rounding); a resumed study keeps the choice it was started with.
    """
    runs_dir = store.check_writable(Path(runs_dir).resolve(), "runs folder", "--runs-dir")
    if resume:
        if not name:
            raise OverfitlabError("resuming needs the study's name: pass --resume NAME")
        study_dir = runs_dir / store.check_name(name)
        if data is not None and spec is not None:  # as it was started: on the data written into it
            spec = on_written_data(spec, study_dir)
        document, spec = _load_resumed(study_dir, name, spec, threads, stack_seeds)
        threads, plans = document["threads"], document["runs"]
        left_out: list[dict[str, str]] | None = document.get("left_out") or []
        stack_seeds = bool(document.get("stack_seeds"))
    else:
        if spec is None:
            raise OverfitlabError("a study needs a spec: pass SPEC.toml or --preset")
        name = store.check_name(name or store.generated_name(spec.name or "study"))
        study_dir = runs_dir / name
        if study_dir.exists() and any(study_dir.iterdir()):
            raise OverfitlabError(
                f"study folder {study_dir} already exists: pass --resume {name} "
                "to finish it, or another --name"
            )
        document = None
        # Threads are fixed before the plans: each run's config carries them.
        threads = backends.resources(
            backend, workers, threads or spec.base.get("threads"), address=address
        ).threads
        if data is not None:
            spec = on_written_data(spec, study_dir)
        plans = [_absolute_data_dir(p.to_dict()) for p in expand(spec, threads=threads)]
        left_out = None
    if tensorboard and stack_seeds:
        raise OverfitlabError("stacked seeds cannot log to TensorBoard: drop --stack-seeds or --tensorboard")
    if tensorboard:
        from .tensorboard import require_tensorboard

        require_tensorboard()
    progress = _progress(progress, plans, name, runs_dir, live, mlflow)
    # A study that fails before it starts (no Ray cluster, a bad backend) leaves no folder;
    # once study.json is written it is a study that `--resume` can finish.
    with store.removed_on_failure(study_dir, keep=lambda: (study_dir / STUDY_JSON).exists()):
        store.ensure_folder(study_dir, "study folder", "--runs-dir")
        if data is not None and not resume:
            from .arrays import save_arrays

            save_arrays(data, study_dir / DATA_FOLDER)
        if left_out is None:  # the model is built here if need be: the data are in place
            plans, left_out = leave_out(plans)
        index = RunIndex.of(runs_dir)
        try:
            with _study_lock(study_dir, name):
                return _run(
                    _Study(name, spec, study_dir, runs_dir, plans, document, left_out),
                    index,
                    backend,
                    workers,
                    threads,
                    address,
                    progress,
                    tensorboard,
                    report,
                    stack_seeds,
                    connect_timeout,
                )
        finally:
            index.close()


def _progress(
    progress: Callable[[dict[str, Any], int, int], None] | None,
    plans: Sequence[Mapping[str, Any]],
    name: str,
    runs_dir: Path,
    live: bool,
    mlflow: bool | str,
) -> Callable[[dict[str, Any], int, int], None] | None:
    """Everything told as each run ends, in this process: the caller's ``progress``, the
    notebook's display, MLflow (one writer: the study, never its workers)."""
    calls = [progress] if progress is not None else []
    if live:
        from .progress import in_notebook

        if in_notebook():
            from .notebook import StudyProgress

            calls.append(StudyProgress([str(p["variant"]) for p in plans]))
    if mlflow:
        from .tracking import Tracker

        tracker = Tracker.for_runs(runs_dir, mlflow if isinstance(mlflow, str) else None)
        parent = tracker.parent(name)

        def log(row: dict[str, Any], done: int, total: int) -> None:
            if row.get("run_dir") and (Path(row["run_dir"]) / store.SUMMARY_JSON).is_file():
                tags = {"study": name, "variant": row.get("variant"), "seed": row.get("seed")}
                if row.get("grid_value") is not None:
                    tags["grid_value"] = row["grid_value"]
                tracker.log_run(row["run_dir"], parent, tags)
            if done == total:
                tracker.end_parent(parent, complete=True)

        calls.append(log)
    if not calls:
        return None

    def every(row: dict[str, Any], done: int, total: int) -> None:
        for call in calls:
            call(row, done, total)

    return every


@dataclass
class _Study:
    name: str
    spec: StudySpec
    dir: Path
    runs_dir: Path
    plans: list[dict[str, Any]]  # RunPlan.to_dict() of every run, in order
    document: dict[str, Any] | None  # the study.json being resumed
    left_out: list[dict[str, str]] = field(default_factory=list)  # variants the model cannot take

    def run_dir(self, plan: Mapping[str, Any]) -> Path:
        name: str = plan["name"]
        return self.dir / name

    def save(self, index: RunIndex, record: dict[str, Any]) -> None:
        store.write_json(self.dir / STUDY_JSON, {**record, "runs": self.plans})
        index.upsert_study(study_record(record))


def _run(
    study: _Study,
    index: RunIndex,
    backend_name: str,
    workers: int | None,
    threads: int,
    address: str | None,
    progress: Callable[[dict[str, Any], int, int], None] | None,
    tensorboard: bool,
    report: bool,
    stack_seeds: bool,
    connect_timeout: float,
) -> StudyResult:
    started = time.perf_counter()
    previous_wall = (study.document or {}).get("wall_seconds") or 0.0
    records = [run_record(study.name, p, study.run_dir(p)) for p in study.plans]
    todo = [i for i, r in enumerate(records) if r["status"] != "complete"]
    for i in todo:  # unfinished or failed: planned afresh
        records[i] = planned_record(study.name, study.plans[i], study.run_dir(study.plans[i]))
    # Longest runs first, so that no worker is left with a long run while the others idle.
    todo.sort(key=lambda i: -expected_cost(study.plans[i]))
    planned = stacked_groups(study.plans, todo) if stack_seeds else [([i], False) for i in todo]
    groups = [group for group, _ in planned]
    sized = backends.resources(backend_name, workers, threads, len(groups) or 1, address)
    record: dict[str, Any] = {
        "name": study.name,
        "spec": study.spec.to_dict(),
        "created_at": study.document["created_at"] if study.document else now(),
        "seeds": list(study.spec.seeds),
        "backend": sized.backend,
        "workers": sized.workers,
        "threads": sized.threads,
        "stack_seeds": stack_seeds,
        "left_out": study.left_out,
        "wall_seconds": previous_wall,
        "status": "running",
    }

    def run_task(i: int) -> dict[str, Any]:
        return {
            "study": study.name,
            "plan": study.plans[i],
            "run_dir": str(study.run_dir(study.plans[i])),
            "tensorboard": tensorboard,
        }

    tasks = [
        {"study": study.name, "stacked": [run_task(i) for i in group]} if stacked else run_task(group[0])
        for group, stacked in planned
    ]

    def on_start(position: int) -> None:
        index.upsert_runs(
            [{**records[i], "status": "running", "started_at": now()} for i in groups[position]]
        )

    done = len(records) - len(todo)
    try:
        with backends.create(sized, address, connect_timeout) as backend:
            record["environment"] = environment(sized, _device_of(study.plans), backend.versions())
            if stack_seeds:  # in the index and the report, where the backend is
                record["environment"]["seed stacking"] = "the seeds of each variant at once (torch.func.vmap)"
            study.save(index, record)
            index.upsert_runs([{**r, "position": i} for i, r in enumerate(records)])
            fn: Callable[[Any], Any] = execute_task
            payloads: list[Any] = tasks
            if backend.remote_nodes:  # data through the object store, run folders sent back
                refs = {key: backend.put(to_store(data)) for key, data in shipped_data(study.plans, todo)}
                fn, payloads = execute_shipped, [ship(task, refs) for task in tasks]
            for position, outcome, error in backend.execute(fn, payloads, on_start):
                group = groups[position]
                if error is None and backend.remote_nodes:
                    try:
                        rows = land(tasks[position], outcome, study.name)
                    except OverfitlabError as err:  # the folder could not be written here
                        error = err
                else:
                    rows = outcome
                if error is not None:  # the worker itself failed, not the run's training
                    rows = [{**records[i], "status": "failed", "error": message_of(error)} for i in group]
                for i, row in zip(group, rows, strict=True):
                    records[i] = row
                    index.upsert_run(row)
                    done += 1
                    if progress is not None:
                        progress(row, done, len(records))
    except KeyboardInterrupt:
        # The backend has stopped its workers by now: the folders say what got done.
        index.upsert_runs(
            [
                run_record(study.name, study.plans[i], study.run_dir(study.plans[i]))
                for i in todo
                if records[i]["status"] not in ("complete", "failed")
            ]
        )
        record.update(
            status="interrupted", wall_seconds=round(previous_wall + time.perf_counter() - started, 3)
        )
        study.save(index, record)
        runs_dir = (
            ""
            if study.runs_dir == Path("runs").resolve()
            else f" --runs-dir {shlex.quote(str(study.runs_dir))}"
        )
        raise Interrupted(
            f"study {study.name}: finish it with `overfitlab study --resume {study.name}{runs_dir}`"
        ) from None
    status = "complete" if all(r["status"] == "complete" for r in records) else "failed"
    wall = previous_wall + time.perf_counter() - started
    record.update(status=status, wall_seconds=round(wall, 3))
    study.save(index, record)
    result = StudyResult(
        study.name, study.dir, status, records, variant_table(records), wall, left_out=study.left_out
    )
    if report:
        result.report = _write_report(study.runs_dir, study.name)
    return result
