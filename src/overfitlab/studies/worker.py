"""A study's unit of work, in whichever process the backend chose: one run, or the seeds of
one variant stacked; and, for nodes that may not share the study's file system, the same
work done in a local folder and sent back (``execute_shipped`` on the node, ``land`` here)."""

from __future__ import annotations

import datetime
import json
import shutil
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import store
from ..config import Config
from ..errors import OverfitlabError
from .index import STATUS_JSON, run_record
from .spec import RunPlan

if TYPE_CHECKING:
    # start-up: a worker server starts without torch
    from ..data.dataset import DataSet


# --------------------------------------------------------------------------- tasks
@dataclass(frozen=True)
class RunTask:
    """One planned run, as a backend hands it to a worker: typed all the way (pickled whole
    to a process or a Ray node, never turned into a dict and parsed back)."""

    study: str
    plan: RunPlan
    run_dir: Path
    tensorboard: bool = False


@dataclass(frozen=True)
class StackedTask:
    """The seeds of one variant (and grid value), trained at once by ``train_seeds``."""

    study: str
    runs: tuple[RunTask, ...]


Task = RunTask | StackedTask


def runs_of(task: Task) -> tuple[RunTask, ...]:
    return task.runs if isinstance(task, StackedTask) else (task,)


# --------------------------------------------------------------------------- one run (in a worker)
def now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def message_of(err: BaseException) -> str:
    if isinstance(err, OverfitlabError):
        return str(err)
    return f"{type(err).__name__}: {err}"


def fresh_folder(run_dir: Path) -> None:
    if run_dir.exists():  # a partial run of an interrupted study: redone from scratch
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True)


def _failed(err: Exception) -> dict[str, Any]:
    """The status of a run that raised: the error, and its traceback where it is a bug."""
    status = {"status": "failed", "error": message_of(err)}
    if not isinstance(err, OverfitlabError):
        status["traceback"] = traceback.format_exc()
    return status


def data_key(config: Config) -> str:
    """What names one loaded data set: the dataset and the options that change its images."""
    fields = [config.dataset, config.data_dir, config.channels, config.image_size, config.valid_fraction]
    return json.dumps(fields)


def execute_run(task: RunTask, data: Mapping[str, DataSet] | None = None) -> dict[str, Any]:
    """Train one planned run into its folder and return its index row.

    Runs in whichever process the backend chose. Any exception is the run's
    error: it is written to ``status.json`` and the row says "failed". Ctrl-C
    leaves the run unfinished (no status.json) and reaches the study as the
    KeyboardInterrupt it is (``Interrupted`` is one). ``data`` maps a dataset name to the
    DataSet to train on (a node that cannot read the files); without one the run loads its
    config's data set itself.
    """
    # start-up: a worker server starts without torch
    from ..runs.train import train

    plan, run_dir = task.plan, task.run_dir
    fresh_folder(run_dir)
    started_at, started = now(), time.perf_counter()
    status: dict[str, Any] = {"status": "complete", "error": None}
    try:
        if plan.config is None:
            raise OverfitlabError(plan.error or "no config")
        config = plan.config
        given = (data or {}).get(data_key(config))
        if task.tensorboard:
            # optional: the tensorboard extra
            from ..training.tensorboard import TensorBoardLogger

            logger = TensorBoardLogger(run_dir / "tb")
            try:
                train(config, run_dir, callbacks=[logger], data=given)
            finally:
                logger.close()  # also when training raised
        else:
            train(config, run_dir, data=given)
    except Exception as err:  # recorded as the run's error; the study goes on
        status = _failed(err)
    status.update(started_at=started_at, ended_at=now(), seconds=round(time.perf_counter() - started, 3))
    store.write_json(run_dir / STATUS_JSON, status)
    return run_record(task.study, plan, run_dir)


def execute_stacked(task: StackedTask, data: Mapping[str, DataSet] | None = None) -> list[dict[str, Any]]:
    """Train the seeds of one variant at once (``runs.stacking``) into their run
    folders; return their index rows. Errors and Ctrl-C as ``execute_run``."""
    # start-up: a worker server starts without torch
    from ..runs.stacking import train_seeds

    runs = task.runs
    run_dirs = [run.run_dir for run in runs]
    for run_dir in run_dirs:
        fresh_folder(run_dir)
    started_at, started = now(), time.perf_counter()
    statuses: list[dict[str, Any]]
    try:
        config = runs[0].plan.config
        if config is None:
            raise OverfitlabError(runs[0].plan.error or "no config")
        seeds = [run.plan.seed for run in runs]
        results = train_seeds(config, seeds, run_dirs, data=(data or {}).get(data_key(config)))
        statuses = [
            {"status": "failed", "error": result.stop_message}
            if result.stop_reason == "diverged"
            else {"status": "complete", "error": None}
            for result in results
        ]
    except Exception as err:  # every member's error; the study goes on
        statuses = [_failed(err) for _ in runs]
    seconds = round((time.perf_counter() - started) / len(runs), 3)  # each member's share
    names = [run.plan.name for run in runs]
    for run_dir, status in zip(run_dirs, statuses, strict=True):
        status.update(started_at=started_at, ended_at=now(), seconds=seconds, stacked_with=names)
        store.write_json(run_dir / STATUS_JSON, status)
    return [run_record(task.study, run.plan, run.run_dir) for run in runs]


def execute_task(task: Task, data: Mapping[str, DataSet] | None = None) -> list[dict[str, Any]]:
    """A backend's unit of work, in whichever process it chose: one run, or the seeds of one
    variant stacked. Returns the index rows of its runs."""
    if isinstance(task, StackedTask):
        return execute_stacked(task, data)
    return [execute_run(task, data)]


# ------------------------------------------------------------ nodes without a shared file system
@dataclass(frozen=True)
class Shipped:
    """A task for a node that may not see the study's folders: trained in a local folder
    there, on data fetched from the backend's object store with the backend's own ``get``."""

    task: Task
    data: Mapping[str, Any]  # data key -> the object-store reference of that data set
    get: Callable[[Any], Any]  # the backend's get: a reference -> what ``put`` stored


def _relocated(task: Task, root: Path) -> Task:
    def moved(run: RunTask) -> RunTask:
        return replace(run, run_dir=root / run.plan.name)

    if isinstance(task, StackedTask):
        return replace(task, runs=tuple(moved(run) for run in task.runs))
    return moved(task)


def execute_shipped(shipped: Shipped) -> dict[str, Any]:
    """On a node: train the task into a temporary local folder, on the data fetched from
    the object store (put there once per study), and return each run folder's files. The
    study's machine writes them (``land``): the node needs neither the runs folder nor the data."""
    import tempfile

    data = {name: from_store(shipped.get(ref)) for name, ref in shipped.data.items()}
    with tempfile.TemporaryDirectory(prefix="overfitlab-run-") as tmp:
        local = _relocated(shipped.task, Path(tmp))
        execute_task(local, data)
        folders = {}
        for run in runs_of(local):
            folders[run.plan.name] = {
                str(path.relative_to(run.run_dir)): path.read_bytes()
                for path in sorted(run.run_dir.rglob("*"))
                if path.is_file()
            }
    return {"folders": folders}


def land(task: Task, result: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Write the run folders a node sent back into their places; return their index rows.
    ``status.json`` goes last, as on a node: a folder without it is an unfinished run."""
    rows = []
    for run in runs_of(task):
        run_dir = run.run_dir
        fresh_folder(run_dir)
        files = result["folders"][run.plan.name]
        for relative in sorted(files, key=lambda name: name == STATUS_JSON):
            target = run_dir / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            store.atomic_write(target, files[relative])
        rows.append(run_record(run.study, run.plan, run_dir))
    return rows


def to_store(data: DataSet) -> dict[str, Any]:
    """A DataSet as numpy arrays (the object store keeps those zero-copy, shared by a node's workers)."""
    return {
        "name": data.name,
        "classes": data.classes,
        "class_names": data.class_names,
        "arrays": [
            data.train.images.numpy(),
            data.train.labels.numpy(),
            data.valid.images.numpy(),
            data.valid.labels.numpy(),
        ],
    }


def from_store(stored: Mapping[str, Any]) -> DataSet:
    """The DataSet ``to_store`` made, its tensors over the store's arrays (not copied)."""
    import warnings

    import torch

    # start-up: a worker server starts without torch
    from ..data.dataset import DataSet
    from ..data.split import Split

    with warnings.catch_warnings():
        # The store's arrays are read-only; training never writes to a data set's tensors
        # (batches are copies), so they are shared, not copied per worker.
        warnings.simplefilter("ignore", UserWarning)
        x_train, y_train, x_valid, y_valid = (torch.from_numpy(a) for a in stored["arrays"])
    return DataSet(
        stored["name"],
        Split(x_train, y_train),
        Split(x_valid, y_valid),
        stored["classes"],
        stored["class_names"],
    )
