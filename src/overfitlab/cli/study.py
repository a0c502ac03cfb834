"""``overfitlab study``: a base recipe, its remedies, several seeds, in parallel, one report."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any

from ..config import flatten_toml
from ..errors import OverfitlabError
from ..metrics import SHORT_LABELS
from ..studies.backends import BACKENDS, RAY_CONNECT_TIMEOUT, start_worker_server
from ..studies.loop import run_study
from ..studies.presets import PRESETS, preset
from ..studies.result import TABLE_METRICS, StudyResult
from ..studies.spec import DEFAULT_SEEDS, MARGIN, MAX_SEEDS, load_spec
from ..textvalues import parse_model_arg
from ..tomltext import read_toml
from ._common import add_config_flags, add_output_flags

if TYPE_CHECKING:
    from ._common import SubParsers

DEFAULT_PRESET = "remedies"


def base_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The Config fields the command line sets: --config FILE's keys, then the flags."""
    overrides = {}
    if getattr(args, "config", None):  # read as `train --config` reads it, with its messages
        overrides.update(flatten_toml(read_toml(args.config), args.config))
    flags = {k[4:]: v for k, v in vars(args).items() if k.startswith("cfg_")}
    if "model_args" in flags:  # flags over the file's [model.args]
        given = dict(map(parse_model_arg, flags["model_args"]))
        flags["model_args"] = {**(overrides.get("model_args") or {}), **given}
    overrides.update(flags)
    return overrides


def _fmt(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def progress_line(row: dict[str, Any], done: int, total: int) -> str:
    width = len(str(total))
    head = f"[{done:>{width}}/{total}] {row['run_id']}"
    if row["status"] != "complete":
        return f"{head}  {row['status']}: {row['error']}"
    return (
        f"{head}  final valid acc {_fmt(row['final_valid_acc'])}  final gap {_fmt(row['final_gap_acc'])}  "
        f"peak valid acc {_fmt(row['peak_valid_acc'])}  ({row['seconds']:.1f}s)"
    )


def table_text(result: StudyResult) -> str:
    grid = any(entry["grid_value"] is not None for entry in result.table)

    def cell(stat: dict[str, Any]) -> str:
        if stat["mean"] is None:
            return "-"
        return _fmt(stat["mean"]) + ("" if stat["std"] is None else f" ± {_fmt(stat['std'])}")

    head = ["variant"] + (["grid"] if grid else []) + ["n"] + [SHORT_LABELS[m] for m in TABLE_METRICS]
    rows = [
        [e["variant"]]
        + ([str(e["grid_value"])] if grid else [])
        + [str(e["n"]) + (f" ({e['failed']} failed)" if e["failed"] else "")]
        + [cell(e[m]) for m in TABLE_METRICS]
        for e in result.ordered_table()
    ]
    widths = [max(len(r[i]) for r in [head] + rows) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in [head] + rows]
    return "\n".join(lines) + "\n"


def run(args: argparse.Namespace) -> int:
    if args.backend == "local":
        # The pool's workers import torch in their server while this process does the same.
        start_worker_server()
    overrides = base_overrides(args)
    if args.resume:
        if args.spec or args.preset or args.name:
            raise OverfitlabError(
                "--resume NAME continues a study as it was planned: drop SPEC, --preset and --name"
            )
        if args.seeds is not None or args.margin is not None or set(overrides) - {"threads"}:
            raise OverfitlabError("--resume NAME keeps the study's recipe and seeds: drop the recipe flags")
        spec, name = None, args.resume
    else:
        if args.spec and args.preset:
            raise OverfitlabError("pass a SPEC.toml or --preset, not both")
        # Nothing named: the main study, every remedy against the over-fitting baseline.
        base = {k: v for k, v in overrides.items() if k != "threads"}
        spec = load_spec(args.spec) if args.spec else preset(args.preset or DEFAULT_PRESET, base=base)
        if args.seeds is not None or args.first_seed or args.max_seeds != MAX_SEEDS:
            spec = spec.with_seeds(args.seeds, args.max_seeds, args.first_seed)
        if args.margin is not None:
            spec = spec.with_margin(args.margin)
        spec = spec.with_base(base)
        name = args.name
    progress = (
        None
        if args.quiet
        else (lambda row, done, total: print(progress_line(row, done, total), file=sys.stderr, flush=True))
    )
    result = run_study(
        spec,
        args.runs_dir,
        name,
        backend=args.backend,
        workers=args.workers,
        threads=overrides.get("threads"),
        address=args.address,
        resume=bool(args.resume),
        progress=progress,
        tensorboard=args.tensorboard,
        stack_seeds=args.stack_seeds,
        connect_timeout=args.connect_timeout,
        mlflow=(overrides.get("mlflow_uri") or True) if args.mlflow or overrides.get("mlflow_uri") else False,
    )
    if args.json:
        print(json.dumps(result.to_dict()))
    else:
        print(table_text(result), end="")
        for line in result.answer_lines():
            print(line)
        for row in result.failed:
            print(f"failed: {row['run_id']}: {row['error']}")
        for entry in result.left_out:
            print(f"left out: {entry['variant']}: {entry['reason']}")
        print(f"study: {result.study_dir} ({len(result.runs)} runs, {result.wall_seconds:.1f} s)")
        if result.report:
            print(f"report: {result.report}")
    return 0 if result.status == "complete" else 1


def add_parser(subparsers: SubParsers) -> None:
    parser = subparsers.add_parser(
        "study",
        help="train variants × seeds of a recipe, in parallel, and write a report",
        description="Train every variant of a base recipe with the same seeds (a paired design), "
        "record every run in RUNS_DIR/index.sqlite and write the study's report. "
        "Exit status 1 when some runs failed (the others are kept).",
    )
    parser.add_argument(
        "spec", nargs="?", metavar="SPEC.toml", help="study spec: [base], [[variant]], seeds, [grid]"
    )
    parser.add_argument(
        "--preset",
        choices=tuple(PRESETS),
        help="built-in study (default without SPEC.toml: remedies): "
        + "; ".join(f"{k}: {v}" for k, v in PRESETS.items()),
    )
    parser.add_argument(
        "--seeds",
        metavar="auto|N",
        help="auto: seeds in stages (3, then more only for the remedies still undecided, up to "
        f"--max-seeds); N: N seeds for every variant at once (default: the spec's; the remedies "
        f"preset's is auto, a spec file's {DEFAULT_SEEDS})",
    )
    parser.add_argument(
        "--max-seeds",
        type=int,
        default=MAX_SEEDS,
        metavar="N",
        help=f"with --seeds auto: at most N seeds per remedy ({MAX_SEEDS} unless given)",
    )
    parser.add_argument(
        "--first-seed",
        type=int,
        default=0,
        metavar="S",
        help="the seeds start at S (default: 0); a study on other seeds is an independent replicate",
    )
    parser.add_argument(
        "--margin",
        type=float,
        metavar="DELTA",
        help=f"an effect on held-out accuracy within ±DELTA counts as no effect (default: {MARGIN})",
    )
    parser.add_argument(
        "--backend",
        choices=BACKENDS,
        default="local",
        help="local: a process pool, a run per core; serial: one run at a time in this "
        "process; ray: Ray tasks; every run on one thread unless --threads (default: local)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="runs at once (default: cores ÷ threads per run; --threads sets those)",
    )
    parser.add_argument("--address", metavar="ADDR", help="join this Ray cluster (with --backend ray)")
    parser.add_argument(
        "--connect-timeout",
        type=float,
        default=RAY_CONNECT_TIMEOUT,
        metavar="SECONDS",
        help=f"give up joining --address after this long (default: {RAY_CONNECT_TIMEOUT:g})",
    )
    parser.add_argument(
        "--resume",
        metavar="NAME",
        help="finish an interrupted study: complete runs are kept, the others redone",
    )
    parser.add_argument(
        "--mlflow",
        action="store_true",
        help="log every run to MLflow, nested under a run named after the study "
        "(--mlflow-uri, default: SQLite in the runs folder)",
    )
    parser.add_argument(
        "--tensorboard", action="store_true", help="also write TensorBoard logs to each run folder's tb/"
    )
    parser.add_argument(
        "--stack-seeds",
        action="store_true",
        help="train the seeds of each variant at once (torch.func.vmap over stacked "
        "weights; for GPUs, slower on CPU; numbers equal up to rounding). Variants "
        "with augmentation, max-norm or normalization run one by one",
    )
    add_output_flags(parser, what="study")
    # The study sets each run's seed; --threads is the threads per run. A flag left out
    # keeps the spec's (or preset's) value, which is not Config's default (epochs 60, not 10).
    add_config_flags(parser, skip=("seed",), default_text="the spec's or preset's")
    parser.set_defaults(handler=run)
