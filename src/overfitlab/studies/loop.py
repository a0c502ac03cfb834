"""The study loop: ``run_study`` plans, schedules and records every run of a spec.

A spec names a base recipe (Config fields), variants (each a name and the
fields it changes), the seeds (the same for every variant: a paired design) and
optionally a grid over one field. ``expand`` turns it into runs; ``run_study``
trains them with ``overfitlab.runs.train`` on a backend (``studies.backends``)
and records each in the run index (``studies.index``)::

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

import os
import shlex
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import store
from ..config import data_options
from ..errors import Interrupted, OverfitlabError
from . import backends
from .index import STUDY_JSON, RunIndex, planned_record, run_record, study_record
from .progress import _progress
from .record import device_of, load_resumed, machine_record, study_lock
from .result import StudyResult, variant_table
from .spec import RunPlan, StudySpec, expand, grid_token
from .worker import (
    RunTask,
    Shipped,
    StackedTask,
    Task,
    data_key,
    execute_shipped,
    execute_task,
    land,
    message_of,
    now,
    to_store,
)

if TYPE_CHECKING:
    from ..data.dataset import DataSet


DATA_FOLDER = "data"  # in a study folder: the DataSet given to run_study, as .npy files


def stacked_groups(plans: Sequence[RunPlan], todo: Sequence[int]) -> list[tuple[list[int], bool]]:
    """The runs to do as tasks, in the order of ``todo``: (the seeds of one variant and grid
    value, True) where stacking can train that recipe (one seed left to redo is stacked
    alone, as its siblings were), ([one run], False) for every other run."""
    # start-up: the study's process imports torch only where it needs it
    from ..runs.stacking import refusals

    groups: dict[tuple[str, str], list[int]] = {}
    tasks: list[tuple[list[int], bool]] = []
    for i in todo:
        plan = plans[i]
        if plan.config is None or refusals(plan.config):
            tasks.append(([i], False))
            continue
        key = (plan.variant, grid_token(plan.grid_value))
        if key not in groups:
            groups[key] = []
            tasks.append((groups[key], True))
        groups[key].append(i)
    return tasks


def shipped_data(plans: Sequence[RunPlan], todo: Sequence[int]) -> Iterator[tuple[str, DataSet]]:
    """The data sets the runs to do read from files (all but the built-in digits, which every
    node has with scikit-learn), each loaded once here, by ``data_key``."""
    # start-up: the study's process imports torch only where it needs it
    from ..data.registry import load_dataset

    seen = set()
    for i in todo:
        config = plans[i].config
        if config is None:
            continue
        key = data_key(config)
        if config.dataset != "digits" and key not in seen:
            seen.add(key)
            yield key, load_dataset(config.dataset, options=data_options(config))


def leave_out(plans: list[RunPlan]) -> tuple[list[RunPlan], list[dict[str, str]]]:
    """The plans without the variants the model cannot take (a ``--batchnorm`` variant on a
    factory with no batchnorm keyword), and those variants with the reason: left out and said
    so in study.json and the report, never run to fail."""
    # start-up: the study's process imports torch only where it needs it
    from ..runs.build import model_refusal

    reasons: dict[str, str | None] = {}
    for plan in plans:
        if plan.variant not in reasons and plan.config is not None:
            reasons[plan.variant] = model_refusal(plan.config)
    left = [{"variant": v, "reason": r} for v, r in reasons.items() if r is not None]
    refused = {entry["variant"] for entry in left}
    return [p for p in plans if p.variant not in refused], left


def _write_report(runs_dir: Path, name: str) -> Path:
    # start-up: scipy and matplotlib only for the report
    from .report import write_report

    return write_report(runs_dir, name)


def expected_cost(plan: RunPlan) -> float:
    """Training images × epochs: a run's relative length, for scheduling (None = the whole set)."""
    config = plan.config
    if config is None:
        return 0.0
    return float(config.train_size or 10**9) * float(config.epochs or 1)


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
    parent run named after the study (``runs.tracking``).

    ``threads`` (torch threads per run) defaults to the base recipe's, else 1 on
    every backend (``backends.DEFAULT_THREADS``), so the same study gives the same
    per-run numbers on each. ``progress(row, done,
    total)`` is called as each run ends. With ``report``, the HTML report is
    written at the end (``studies.report``). ``spec`` may be None when resuming.
    With ``stack_seeds``, the seeds of each variant that stacking can train are
    trained at once (``runs.stacking``: for GPUs; numbers equal up to
    rounding); a resumed study keeps the choice it was started with.
    """
    runs_dir = store.check_writable(Path(runs_dir).resolve(), "runs folder", "--runs-dir")
    if resume:
        if not name:
            raise OverfitlabError("resuming needs the study's name: pass --resume NAME")
        study_dir = runs_dir / store.check_name(name)
        if data is not None and spec is not None:  # as it was started: on the data written into it
            spec = on_written_data(spec, study_dir)
        document, spec = load_resumed(study_dir, name, spec, threads, stack_seeds)
        threads, plans = document["threads"], [RunPlan.from_dict(p) for p in document["runs"]]
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
        plans = [p.with_absolute_data_dir() for p in expand(spec, threads=threads)]
        left_out = None
    if tensorboard and stack_seeds:
        raise OverfitlabError("stacked seeds cannot log to TensorBoard: drop --stack-seeds or --tensorboard")
    if tensorboard:
        # optional: the tensorboard extra
        from ..training.tensorboard import require_tensorboard

        require_tensorboard()
    progress = _progress(progress, plans, name, runs_dir, live, mlflow)
    # A study that fails before it starts (no Ray cluster, a bad backend) leaves no folder;
    # once study.json is written it is a study that `--resume` can finish.
    with store.removed_on_failure(study_dir, keep=lambda: (study_dir / STUDY_JSON).exists()):
        store.ensure_folder(study_dir, "study folder", "--runs-dir")
        if data is not None and not resume:
            # start-up: the study's process imports torch only where it needs it
            from ..data.dataset import save_arrays

            save_arrays(data, study_dir / DATA_FOLDER)
        if left_out is None:  # the model is built here if need be: the data are in place
            plans, left_out = leave_out(plans)
        index = RunIndex.of(runs_dir)
        try:
            with study_lock(study_dir, name):
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


@dataclass
class _Study:
    name: str
    spec: StudySpec
    dir: Path
    runs_dir: Path
    plans: list[RunPlan]  # every run, in order
    document: dict[str, Any] | None  # the study.json being resumed
    left_out: list[dict[str, str]] = field(default_factory=list)  # variants the model cannot take

    def run_dir(self, plan: RunPlan) -> Path:
        return self.dir / plan.name

    def save(self, index: RunIndex, record: dict[str, Any]) -> None:
        store.write_json(self.dir / STUDY_JSON, {**record, "runs": [p.to_dict() for p in self.plans]})
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

    # start-up: numpy and scipy only once a study runs
    from .decisions import decisions, next_stage, question

    def schedule(todo: list[int]) -> list[tuple[list[int], bool]]:
        # Longest runs first, so that no worker is left with a long run while the others idle.
        todo = sorted(todo, key=lambda i: -expected_cost(study.plans[i]))
        return stacked_groups(study.plans, todo) if stack_seeds else [([i], False) for i in todo]

    planned = schedule(todo)
    sized = backends.resources(backend_name, workers, threads, len(planned) or 1, address)
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
    done = len(records) - len(todo)
    try:
        with backends.create(sized, address, connect_timeout) as backend:
            record["environment"] = machine_record(sized, device_of(study.plans), backend.versions())
            if stack_seeds:  # in the index and the report, where the backend is
                record["environment"]["seed stacking"] = "the seeds of each variant at once (torch.func.vmap)"
            while True:  # one stage of seeds at a time: the next goes to the remedies still open
                study.save(index, record)
                index.upsert_runs([{**r, "position": i} for i, r in enumerate(records)])
                done = _execute(study, index, backend, planned, records, tensorboard, progress, done)
                more = next_stage(study.spec, study.plans, records, study.left_out, threads)
                if not more:
                    break
                todo = list(range(len(study.plans), len(study.plans) + len(more)))
                study.plans.extend(more)
                records.extend(planned_record(study.name, p, study.run_dir(p)) for p in more)
                planned = schedule(todo)
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
    answers = decisions(records, study.spec, study.left_out)
    result = StudyResult(
        study.name,
        study.dir,
        status,
        records,
        variant_table(records),
        wall,
        left_out=study.left_out,
        decisions=answers,
        question=question(study.spec, len(answers)),
    )
    if report:
        result.report = _write_report(study.runs_dir, study.name)
    return result


def _execute(
    study: _Study,
    index: RunIndex,
    backend: backends.Backend,
    planned: list[tuple[list[int], bool]],
    records: list[dict[str, Any]],
    tensorboard: bool,
    progress: Callable[[dict[str, Any], int, int], None] | None,
    done: int,
) -> int:
    """Run one stage's groups of runs on the backend, recording each row as it ends."""
    groups = [group for group, _ in planned]

    def run_task(i: int) -> RunTask:
        return RunTask(study.name, study.plans[i], study.run_dir(study.plans[i]), tensorboard)

    tasks: list[Task] = [
        StackedTask(study.name, tuple(run_task(i) for i in group)) if stacked else run_task(group[0])
        for group, stacked in planned
    ]

    def on_start(position: int) -> None:
        index.upsert_runs(
            [{**records[i], "status": "running", "started_at": now()} for i in groups[position]]
        )

    fn: Callable[[Any], Any] = execute_task
    payloads: list[Any] = tasks
    if backend.remote_nodes:  # data through the object store, run folders sent back
        todo = [i for group in groups for i in group]
        refs = {key: backend.put(to_store(data)) for key, data in shipped_data(study.plans, todo)}
        fn, payloads = execute_shipped, [Shipped(task, refs, backend.get) for task in tasks]
    for position, outcome, error in backend.execute(fn, payloads, on_start):
        group = groups[position]
        if error is None and backend.remote_nodes:
            try:
                rows = land(tasks[position], outcome)
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
    return done
