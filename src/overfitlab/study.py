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
import dataclasses
import datetime
import math
import os
import platform
import shlex
import shutil
import time
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import backends, store
from .config import (
    FIELDS,
    Config,
    apply_overrides,
    flatten_toml,
    from_dict,
    read_toml,
    to_dict,
    unknown_key_error,
)
from .errors import OverfitlabError
from .index import STATUS_JSON, STUDY_JSON, RunIndex, planned_record, run_record, study_record

if TYPE_CHECKING:
    from .data import DataSet

DEFAULT_SEEDS = 3
SPEC_KEYS = ("name", "description", "seeds", "base", "variant", "grid")
GRID_KEYS = ("field", "values")
# The study sets these per run: a variant changing them would break the paired design
# or make a run's numbers depend on where it ran.
STUDY_FIELDS = ("seed", "threads")
TABLE_METRICS = ("final_valid_acc", "final_gap_acc", "peak_valid_acc", "lowest_valid_loss")
DATA_FOLDER = "data"  # in a study folder: the DataSet given to run_study, as .npy files


# --------------------------------------------------------------------------- spec
@dataclass(frozen=True)
class Variant:
    name: str
    overrides: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Grid:
    field: str
    values: tuple[Any, ...]


@dataclass(frozen=True)
class StudySpec:
    base: dict[str, Any]
    variants: tuple[Variant, ...]
    seeds: tuple[int, ...] = tuple(range(DEFAULT_SEEDS))
    grid: Grid | None = None
    name: str | None = None
    description: str = ""

    def with_seeds(self, seeds: int | Sequence[int]) -> StudySpec:
        return dataclasses.replace(self, seeds=parse_seeds(seeds, "--seeds"))

    def with_base(self, overrides: Mapping[str, Any]) -> StudySpec:
        """The spec with base fields changed (command-line flags over the spec's base).

        Another model in the overrides drops the base's CNN options that the overrides do not
        set: they describe the preset's CNN (a preset's ``hidden = 16``), not the new model."""
        from .factories import ARCHITECTURE_OPTIONS

        kept = dict(self.base)
        if "model" in overrides and overrides["model"] != kept.get("model"):
            for key in ARCHITECTURE_OPTIONS:
                if key not in overrides:
                    kept.pop(key, None)
        base = check_overrides({**kept, **overrides}, "the base recipe", allow=("threads",))
        apply_overrides(Config(), base, "the base recipe")  # a bad base would fail every run
        return dataclasses.replace(self, base=base)

    def to_dict(self) -> dict[str, Any]:
        """The canonical form, stored in study.json and the index."""
        return {
            "name": self.name,
            "description": self.description,
            "base": dict(self.base),
            "variants": [{"name": v.name, "overrides": dict(v.overrides)} for v in self.variants],
            "seeds": list(self.seeds),
            "grid": {"field": self.grid.field, "values": list(self.grid.values)} if self.grid else None,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> StudySpec:
        grid = data.get("grid")
        return make_spec(
            base=data.get("base") or {},
            variants=[(v["name"], v.get("overrides") or {}) for v in data.get("variants") or []],
            seeds=data.get("seeds", DEFAULT_SEEDS),
            grid=(grid["field"], grid["values"]) if grid else None,
            name=data.get("name"),
            description=data.get("description") or "",
            where="study spec",
        )


def parse_seeds(seeds: Any, where: str) -> tuple[int, ...]:
    if isinstance(seeds, int) and not isinstance(seeds, bool):
        if seeds < 1:
            raise OverfitlabError(f"{where}: seeds must be ≥ 1, got {seeds}")
        return tuple(range(seeds))
    if (
        isinstance(seeds, (list, tuple))
        and seeds
        and all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds)
    ):
        if len(set(seeds)) != len(seeds):
            raise OverfitlabError(f"{where}: seeds repeat in {list(seeds)}: list each seed once")
        return tuple(seeds)
    raise OverfitlabError(
        f"{where}: seeds must be a count (3) or a list of seeds ≥ 0 ([0, 1, 2]), got {seeds!r}"
    )


def _optional(name: str) -> bool:
    return "None" in str(FIELDS[name].type)


def check_overrides(overrides: Mapping[str, Any], where: str, allow: Sequence[str] = ()) -> dict[str, Any]:
    """Known Config fields only (the error lists them); seed and threads belong to the study."""
    for key in overrides:
        if key not in FIELDS:
            raise unknown_key_error(key, where)
        if key in STUDY_FIELDS and key not in allow:
            what = "seeds = N or [..] in the spec, or --seeds" if key == "seed" else "--threads"
            raise OverfitlabError(
                f"{key} cannot be set in {where}: the study sets it for every run (use {what})"
            )
    # TOML has no null: "none" means "the field's default" for optional fields.
    return {
        k: (None if isinstance(v, str) and v.lower() == "none" and _optional(k) else v)
        for k, v in overrides.items()
    }


def _token(value: Any) -> str:
    """A grid value as it appears in run folder names."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def make_spec(
    base: Mapping[str, Any],
    variants: Sequence[tuple[str, Mapping[str, Any]]],
    seeds: Any = DEFAULT_SEEDS,
    grid: tuple[str, Sequence[Any]] | None = None,
    name: str | None = None,
    description: str = "",
    where: str = "study spec",
) -> StudySpec:
    """Check every part of a spec; unknown fields are errors naming the valid ones."""
    base = check_overrides(base, f"{where} [base]", allow=("threads",))
    try:
        apply_overrides(Config(), base, f"{where} [base]")  # a bad base would fail every run
    except OverfitlabError as err:
        raise OverfitlabError(f"{where} [base]: {err}") from None
    checked: list[Variant] = []
    for variant_name, overrides in variants or [("baseline", {})]:
        if not isinstance(variant_name, str) or not variant_name:
            raise OverfitlabError(f'{where}: every [[variant]] needs a name = "..."')
        try:
            store.check_name(variant_name)
        except OverfitlabError as err:
            raise OverfitlabError(f"{where}: variant name: {err}") from None
        if any(v.name == variant_name for v in checked):
            raise OverfitlabError(f"{where}: two variants are named {variant_name!r}: rename one")
        checked.append(Variant(variant_name, check_overrides(overrides, f"{where} variant {variant_name!r}")))
    parsed_grid = None
    if grid is not None:
        grid_field, values = grid
        if grid_field not in FIELDS:
            raise OverfitlabError(
                f"unknown grid field {grid_field!r} in {where}: valid fields are {', '.join(sorted(FIELDS))}"
            )
        if grid_field in STUDY_FIELDS:
            raise OverfitlabError(f"{where}: the grid cannot be over {grid_field} (the study sets it)")
        if not isinstance(values, (list, tuple)) or not values:
            raise OverfitlabError(f"{where}: grid values must be a non-empty list, got {values!r}")
        if any(v is None or isinstance(v, (dict, list)) for v in values):
            raise OverfitlabError(f"{where}: grid values must be numbers, strings or booleans")
        tokens = [_token(v) for v in values]
        if len(set(tokens)) != len(tokens):
            raise OverfitlabError(f"{where}: grid values repeat in {list(values)}")
        for token in tokens:
            store.check_name(token)
        parsed_grid = Grid(grid_field, tuple(values))
    if name is not None:
        store.check_name(name)
    return StudySpec(dict(base), tuple(checked), parse_seeds(seeds, where), parsed_grid, name, description)


def parse_spec(document: Mapping[str, Any], where: str) -> StudySpec:
    """A spec from a TOML document (``[base]``, ``[[variant]]``, ``[grid]``)."""
    for key in document:
        if key not in SPEC_KEYS:
            raise OverfitlabError(f"unknown key {key!r} in {where}: valid keys are {', '.join(SPEC_KEYS)}")
    base = document.get("base", {})
    if not isinstance(base, dict):
        raise OverfitlabError(f"{where}: base must be a table ([base])")
    variants = document.get("variant", [])
    if not isinstance(variants, list) or not all(isinstance(v, dict) for v in variants):
        raise OverfitlabError(f"{where}: variants must be [[variant]] tables")
    grid = document.get("grid")
    if grid is not None:
        if not isinstance(grid, dict):
            raise OverfitlabError(f"{where}: grid must be a table ([grid])")
        for key in grid:
            if key not in GRID_KEYS:
                raise OverfitlabError(f"unknown key {key!r} in {where} [grid]: valid keys are field, values")
        if "field" not in grid or "values" not in grid:
            raise OverfitlabError(f'{where}: [grid] needs field = "..." and values = [...]')
        grid = (grid["field"], grid["values"])
    return make_spec(
        base=flatten_toml(base, f"{where} [base]"),
        variants=[
            (
                v.get("name"),
                flatten_toml(
                    {k: x for k, x in v.items() if k != "name"}, f"{where} variant {v.get('name')!r}"
                ),
            )
            for v in variants
        ],
        seeds=document.get("seeds", DEFAULT_SEEDS),
        grid=grid,
        name=document.get("name"),
        description=document.get("description", ""),
        where=where,
    )


def load_spec(path: str | os.PathLike[str]) -> StudySpec:
    document = read_toml(path, "study spec", "check the path, or use --preset")
    return parse_spec(document, str(path))


# --------------------------------------------------------------------------- presets
# The tutorial's over-fitting set-up on the built-in digits: 300 training images and a CNN
# without any remedy reach 100 % train accuracy within ~15 epochs; by epoch 60 the valid
# loss has climbed back ~30 % above its minimum. A run takes a few seconds on one thread.
REMEDIES_BASE = {
    "dataset": "digits",
    "train_size": 300,
    "model": "seed-cnn",
    "hidden": 16,
    "batchnorm": False,
    "dropout": 0.0,
    "head": "fc",
    "epochs": 60,
}
# Each strength picked from a short sweep (seeds 0-2, 1 thread) as the value with the lowest
# final valid loss: l1 1e-5/1e-4/1e-3 (1e-3 collapses to chance on one seed), l2
# 1e-4/3e-4/1e-3/1e-2 (1e-2 collapses), AdamW weight decay 0.01/0.1/0.5, dropout 0.2/0.3/0.5.
# Augmentation has no strength to tune: shifts scale with the image (±0.57 px on 8×8 digits)
# and rotations are ±10°; on seed 0 it lifts the best valid accuracy from 0.964 to 0.973.
REMEDIES: tuple[tuple[str, dict[str, Any]], ...] = (
    ("baseline", {}),
    ("early-stopping", {"early_stopping": True, "patience": 5}),
    ("l1", {"l1": 1e-4}),
    ("l2", {"l2": 3e-4}),
    ("weight-decay", {"optimizer": "adamw", "weight_decay": 0.1}),
    ("batchnorm", {"batchnorm": True}),
    ("dropout", {"dropout": 0.3}),
    ("gap-head", {"head": "gap"}),
    ("augmentation", {"augment": True}),
    ("more-data", {"train_size": None}),
)
# Every remedy at once, on the same 300 images: more data is the reference, not a remedy
# one can apply. Stacked, the remedies over-regularize; the study measures by how much.
ALL_REMEDIES = {
    k: v
    for name, overrides in REMEDIES
    if name not in ("baseline", "more-data")
    for k, v in overrides.items()
}
DATA_SIZES = (75, 150, 300, 600, 1347)  # 1347: every digits training image

PRESETS = {
    "remedies": "each remedy alone, and all together, against an over-fitting baseline (digits)",
    "data-size": "the over-fitting baseline at growing training set sizes (digits)",
}


def preset(name: str, seeds: int | Sequence[int] = DEFAULT_SEEDS) -> StudySpec:
    """A built-in study: ``remedies`` or ``data-size``."""
    if name == "remedies":
        return make_spec(
            REMEDIES_BASE,
            [*REMEDIES, ("all-remedies", ALL_REMEDIES)],
            seeds,
            name="remedies",
            description=PRESETS[name],
            where="preset remedies",
        )
    if name == "data-size":
        base = {k: v for k, v in REMEDIES_BASE.items() if k != "train_size"}
        return make_spec(
            base,
            [("baseline", {})],
            seeds,
            grid=("train_size", DATA_SIZES),
            name="data-size",
            description=PRESETS[name],
            where="preset data-size",
        )
    raise OverfitlabError(f"unknown preset {name!r}: choose one of {', '.join(PRESETS)}")


# --------------------------------------------------------------------------- plans
@dataclass(frozen=True)
class RunPlan:
    """One run of a study. ``config`` is None when the overrides are invalid; ``error`` says why
    (the run is then recorded as failed, and the other runs go on)."""

    name: str
    variant: str
    seed: int
    grid_field: str | None
    grid_value: Any
    config: Config | None
    error: str | None = None
    overrides: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "variant": self.variant,
            "seed": self.seed,
            "grid_field": self.grid_field,
            "grid_value": self.grid_value,
            "config": to_dict(self.config) if self.config is not None else dict(self.overrides),
            "error": self.error,
        }


def run_name(variant: str, seed: int, grid_value: Any = None, has_grid: bool = False) -> str:
    return f"{variant}-{_token(grid_value)}-s{seed}" if has_grid else f"{variant}-s{seed}"


def expand(spec: StudySpec, threads: int | None = None) -> list[RunPlan]:
    """Every run of the spec: variants × grid values × seeds, the same seeds for each variant."""
    plans = []
    grid_values = spec.grid.values if spec.grid else (None,)
    for variant in spec.variants:
        for value in grid_values:
            for seed in spec.seeds:
                overrides = {**spec.base, **variant.overrides}
                if spec.grid:
                    overrides[spec.grid.field] = value
                overrides["seed"] = seed
                if threads is not None:
                    overrides["threads"] = threads
                where = f"variant {variant.name!r}" + (
                    f" at {spec.grid.field} = {value!r}" if spec.grid else ""
                )
                try:
                    config, error = apply_overrides(Config(), overrides, where), None
                except OverfitlabError as err:
                    config, error = None, f"{where}: {err}"
                plans.append(
                    RunPlan(
                        run_name(variant.name, seed, value, spec.grid is not None),
                        variant.name,
                        seed,
                        spec.grid.field if spec.grid else None,
                        value,
                        config,
                        error,
                        overrides,
                    )
                )
    return plans


# --------------------------------------------------------------------------- one run (in a worker)
def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _message(err: BaseException) -> str:
    if isinstance(err, OverfitlabError):
        return str(err)
    return f"{type(err).__name__}: {err}"


def _fresh_folder(run_dir: Path) -> None:
    if run_dir.exists():  # a partial run of an interrupted study: redone from scratch
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True)


def _failed(err: Exception) -> dict[str, Any]:
    """The status of a run that raised: the error, and its traceback where it is a bug."""
    status = {"status": "failed", "error": _message(err)}
    if not isinstance(err, OverfitlabError):
        status["traceback"] = traceback.format_exc()
    return status


def execute_run(task: Mapping[str, Any]) -> dict[str, Any]:
    """Train one planned run into its folder and return its index row.

    Runs in whichever process the backend chose. Any exception is the run's
    error: it is written to ``status.json`` and the row says "failed". Ctrl-C
    leaves the run unfinished (no status.json) and reaches the study as
    KeyboardInterrupt.
    """
    from .run import Interrupted, train

    plan, run_dir = task["plan"], Path(task["run_dir"])
    _fresh_folder(run_dir)
    started_at, started = _now(), time.perf_counter()
    status: dict[str, Any] = {"status": "complete", "error": None}
    try:
        if plan.get("error"):
            raise OverfitlabError(plan["error"])
        if task.get("tensorboard"):
            from .tensorboard import TensorBoardLogger

            logger = TensorBoardLogger(run_dir / "tb")
            try:
                train(from_dict(plan["config"]), run_dir, callbacks=[logger])
            finally:
                logger.close()  # also when training raised
        else:
            train(from_dict(plan["config"]), run_dir)
    except Interrupted:
        raise KeyboardInterrupt from None
    except Exception as err:  # recorded as the run's error; the study goes on
        status = _failed(err)
    status.update(started_at=started_at, ended_at=_now(), seconds=round(time.perf_counter() - started, 3))
    store.write_json(run_dir / STATUS_JSON, status)
    return run_record(task["study"], plan, run_dir)


def execute_stacked(task: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Train the seeds of one variant at once (``overfitlab.stacking``) into their run
    folders; return their index rows. Errors and Ctrl-C as ``execute_run``."""
    from .run import Interrupted
    from .stacking import train_seeds

    runs = task["stacked"]
    run_dirs = [Path(run["run_dir"]) for run in runs]
    for run_dir in run_dirs:
        _fresh_folder(run_dir)
    started_at, started = _now(), time.perf_counter()
    statuses: list[dict[str, Any]]
    try:
        results = train_seeds(
            from_dict(runs[0]["plan"]["config"]), [run["plan"]["seed"] for run in runs], run_dirs
        )
        statuses = [
            {"status": "failed", "error": result.stop_message}
            if result.stop_reason == "diverged"
            else {"status": "complete", "error": None}
            for result in results
        ]
    except Interrupted:
        raise KeyboardInterrupt from None
    except Exception as err:  # every member's error; the study goes on
        statuses = [_failed(err) for _ in runs]
    seconds = round((time.perf_counter() - started) / len(runs), 3)  # each member's share
    names = [run["plan"]["name"] for run in runs]
    for run_dir, status in zip(run_dirs, statuses, strict=True):
        status.update(started_at=started_at, ended_at=_now(), seconds=seconds, stacked_with=names)
        store.write_json(run_dir / STATUS_JSON, status)
    return [
        run_record(task["study"], run["plan"], run_dir) for run, run_dir in zip(runs, run_dirs, strict=True)
    ]


def execute_task(task: Mapping[str, Any]) -> list[dict[str, Any]]:
    """A backend's unit of work, in whichever process it chose: one run, or the seeds of one
    variant stacked. Returns the index rows of its runs."""
    if "stacked" in task:
        return execute_stacked(task)
    return [execute_run(task)]


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
        key = (plan["variant"], _token(plan["grid_value"]))
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
    from .run import resolve_device

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
            spec = spec.with_base({"dataset": f"arrays:{study_dir / DATA_FOLDER}", "data_dir": None})
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
        "created_at": study.document["created_at"] if study.document else _now(),
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
            [{**records[i], "status": "running", "started_at": _now()} for i in groups[position]]
        )

    done = len(records) - len(todo)
    try:
        with backends.create(sized, address, connect_timeout) as backend:
            record["environment"] = environment(sized, _device_of(study.plans), backend.versions())
            if stack_seeds:  # in the index and the report, where the backend is
                record["environment"]["seed stacking"] = "the seeds of each variant at once (torch.func.vmap)"
            study.save(index, record)
            index.upsert_runs([{**r, "position": i} for i, r in enumerate(records)])
            for position, rows, error in backend.execute(execute_task, tasks, on_start):
                group = groups[position]
                if error is not None:  # the worker itself failed, not the run's training
                    rows = [{**records[i], "status": "failed", "error": _message(error)} for i in group]
                for i, row in zip(group, rows, strict=True):
                    records[i] = row
                    index.upsert_run(row)
                    done += 1
                    if progress is not None:
                        progress(row, done, len(records))
    except KeyboardInterrupt:
        # The backend has stopped its workers by now: the folders say what got done.
        from .run import Interrupted

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
