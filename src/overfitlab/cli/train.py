"""``overfitlab train``: one run, every remedy a flag."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from ..config import load_toml
from ..errors import OverfitlabError
from ..store import CONFIG, LAST, SUMMARY_JSON, new_run_dir, removed_on_failure
from ._common import add_config_flags, add_output_flags, config_from_args

if TYPE_CHECKING:  # the command line starts without torch
    from ..runs.result import RunResult
    from ..runs.tracking import Tracker
    from ._common import SubParsers


def recipe_flags(args: argparse.Namespace) -> list[str]:
    """The recipe flags given on the command line (``--config`` counts as one)."""
    given = [k[4:] for k in vars(args) if k.startswith("cfg_")]
    flags = ["--" + name.replace("_", "-") for name in given]
    return flags + (["--config"] if getattr(args, "config", None) else [])


def run(args: argparse.Namespace) -> int:
    # start-up: loaded for this command only (torch, matplotlib, scipy)
    from ..runs.result import summary_text
    from ..runs.train import resume, train
    from ..training.progress import EpochProgress

    if args.resume:
        run_dir = Path(args.resume)
        refused = [f for f in recipe_flags(args) if f != "--epochs"]
        if refused or args.name:
            raise OverfitlabError(
                f"--resume continues {run_dir} with its own recipe (its config.toml): drop "
                f"{', '.join(refused + (['--name'] if args.name else []))} (only --epochs, to train "
                "further, can change)"
            )
        config_epochs = getattr(args, "cfg_epochs", None)
        saved = run_dir / CONFIG
        shown_epochs = config_epochs or (load_toml(saved).epochs if saved.is_file() else 0)
        callbacks = [] if args.quiet or not sys.stderr.isatty() else [EpochProgress(shown_epochs)]
        runs_dir = run_dir.resolve().parent
        mlflow_uri = load_toml(saved).mlflow_uri if saved.is_file() else None

        def fit() -> RunResult:
            return resume(run_dir, epochs=config_epochs, callbacks=callbacks)

    else:
        config = config_from_args(args)
        run_dir = new_run_dir(args.runs_dir, args.name)
        runs_dir = Path(args.runs_dir)
        mlflow_uri = config.mlflow_uri
        callbacks = [] if args.quiet or not sys.stderr.isatty() else [EpochProgress(config.epochs)]

        def fit() -> RunResult:
            return train(config, run_dir, callbacks=callbacks)

    check_index(runs_dir)  # a broken index is found before training, not after
    # A URI the user gave is tried now, before training; the default store (SQLite in the
    # runs folder) is made once the run's folder is there.
    track = bool(args.mlflow or mlflow_uri)
    tracker = tracker_for(runs_dir, mlflow_uri) if track and mlflow_uri else None
    if track:
        # start-up: loaded for this command only (torch, matplotlib, scipy)
        from ..runs.tracking import require_mlflow

        require_mlflow()
    try:
        # A run that ends before its first epoch is saved (bad data, Ctrl-C) leaves no folder.
        with removed_on_failure(run_dir, keep=lambda: (run_dir / LAST).is_file()):
            result = fit()
    finally:  # interrupted and diverged runs too: `overfitlab runs list` shows them
        index_problem = record_in_index(run_dir)
        if track and (run_dir / SUMMARY_JSON).is_file():
            (tracker or tracker_for(runs_dir, None)).log_run(run_dir)
    summary = result.summary()
    if args.json:
        print(json.dumps(summary))
    else:
        print(summary_text(summary), end="")
    if index_problem:
        print(f"overfitlab: warning: the run is saved, but {index_problem}", file=sys.stderr)
    return 0


def tracker_for(runs_dir: Path, uri: str | None) -> Tracker:
    """The MLflow store, opened before training: a missing extra or a bad URI fails now."""
    # start-up: loaded for this command only (torch, matplotlib, scipy)
    from ..runs.tracking import Tracker

    return Tracker.for_runs(runs_dir, uri)


def check_index(runs_dir: Path) -> None:
    """Open the index of the runs folder if there is one: a corrupt or unwritable index is an
    error now, while nothing is trained yet."""
    # start-up: loaded for this command only (torch, matplotlib, scipy)
    from ..studies.index import INDEX, RunIndex

    if (runs_dir / INDEX).exists():
        RunIndex(runs_dir / INDEX).close()


def record_in_index(run_dir: Path) -> str | None:
    """Enter the run in its runs folder's index (the folder it was created in); a study's
    run resumed by hand stays the study's business. Returns what went wrong, if anything:
    the run itself is saved in its folder whatever happens to the index."""
    # start-up: loaded for this command only (torch, matplotlib, scipy)
    from ..studies.index import INDEX, STUDY_JSON, RunIndex, single_run_record

    runs_dir = run_dir.resolve().parent
    if not (run_dir / SUMMARY_JSON).is_file() or (runs_dir / STUDY_JSON).exists():
        return None
    try:
        with RunIndex(runs_dir / INDEX) as index:
            index.upsert_run(single_run_record(run_dir))
    except OverfitlabError as err:
        return f"the run index could not be updated ({err})"
    return None


def add_parser(subparsers: SubParsers) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train one model and save its run folder",
        description="Train one model; every remedy is a flag. Writes RUNS_DIR/NAME/.",
    )
    add_output_flags(parser)
    parser.add_argument(
        "--mlflow",
        action="store_true",
        help="log the run to MLflow (--mlflow-uri, default: SQLite in the runs folder)",
    )
    parser.add_argument(
        "--resume",
        metavar="RUN_DIR",
        help="continue an interrupted run folder with its own recipe (--epochs may raise its epoch limit)",
    )
    add_config_flags(parser)
    parser.set_defaults(handler=run)
