"""``overfitlab diagnose``: does it over-fit, would more data help, which remedy; with evidence."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING

from ._common import add_config_flags, add_output_flags, eta_line
from .study import base_overrides

if TYPE_CHECKING:
    from ._common import SubParsers


def run(args: argparse.Namespace) -> int:
    # start-up: loaded for this command only (torch, matplotlib, scipy)
    from ..diagnosis.battery import diagnose

    shown = not args.quiet and sys.stderr.isatty()
    progress = eta_line(shown)
    result = diagnose(
        base_overrides(args),
        runs_dir=args.runs_dir,
        name=args.resume or args.name,
        budget=args.budget,
        backend=args.backend,
        workers=args.workers,
        resume=bool(args.resume),
        progress=progress,
        first_seed=args.first_seed,
    )
    if shown:
        print(file=sys.stderr)
    if args.json:
        print(json.dumps(result.to_dict()))
    else:
        print(result.verdict)
        print(f"diagnosis: {result.folder} ({result.wall_seconds:.1f} s)")
        print(f"report: {result.folder / 'diagnosis.html' if result.folder else '-'}")
    return 0


def add_parser(subparsers: SubParsers) -> None:
    parser = subparsers.add_parser(
        "diagnose",
        help="does the model over-fit, would more data help, which remedy: one report",
        description="Run the diagnosis battery on a recipe (default: the remedies preset's over-fitting "
        "baseline on the digits) and write RUNS_DIR/NAME/diagnosis.html and diagnosis.json.",
    )
    parser.add_argument(
        "--budget",
        choices=("quick", "standard", "full"),
        default="standard",
        help="seeds, sizes and folds (default: standard)",
    )
    parser.add_argument(
        "--backend",
        choices=("serial", "local", "ray"),
        default="local",
        help="where the runs train (default: local)",
    )
    parser.add_argument("--workers", type=int, help="parallel runs (default: one per core)")
    parser.add_argument(
        "--first-seed",
        type=int,
        default=0,
        metavar="S",
        help="the seeds start at S (default: 0); a diagnosis on other seeds is an independent replicate",
    )
    add_output_flags(
        parser,
        "diagnosis",
        json_help="print diagnosis.json's content",
        resume_help="finish an interrupted diagnosis, same recipe",
        holds="diagnosis folders",
    )
    add_config_flags(parser, skip=("seed", "threads"))
    parser.set_defaults(handler=run)
