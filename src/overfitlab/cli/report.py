"""``overfitlab report``: one self-contained HTML page for a study."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._common import SubParsers


def run(args: argparse.Namespace) -> int:
    from ..report import write_report  # scipy and matplotlib load only for this command

    path = write_report(args.runs_dir, args.study, args.out)
    print(path)
    return 0


def add_parser(subparsers: SubParsers) -> None:
    parser = subparsers.add_parser(
        "report", help="write a study's HTML report (tables, intervals, pictures; works offline)"
    )
    parser.add_argument("study", help="study name, as given to `overfitlab study`")
    parser.add_argument("--runs-dir", default="runs", help="folder holding index.sqlite (default: runs)")
    parser.add_argument("--out", metavar="FILE", help="where to write (default: RUNS_DIR/STUDY/report.html)")
    parser.set_defaults(handler=run)
