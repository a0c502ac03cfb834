"""``overfitlab report``: one self-contained HTML page for a study."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import OverfitlabError

if TYPE_CHECKING:
    from ._common import SubParsers


def study_of(text: str, runs_dir: str) -> tuple[str, str]:
    """(runs folder, study name) from a study's name or its folder (the path `study` prints)."""
    # start-up: loaded for this command only (torch, matplotlib, scipy)
    from ..studies.index import STUDY_JSON

    path = Path(text)
    if (path / STUDY_JSON).is_file():
        return str(path.resolve().parent), path.resolve().name
    if len(path.parts) > 1 or path.is_dir():
        raise OverfitlabError(
            f"{text} is not a study folder (no study.json in it): pass a study's name or the folder "
            "`overfitlab study` printed"
        )
    return runs_dir, text


def run(args: argparse.Namespace) -> int:
    # start-up: loaded for this command only (torch, matplotlib, scipy)
    from ..studies.report import write_report

    runs_dir, study = study_of(args.study, args.runs_dir)
    path = write_report(runs_dir, study, args.out)
    print(path)
    return 0


def add_parser(subparsers: SubParsers) -> None:
    parser = subparsers.add_parser(
        "report",
        help="write a study's HTML report (tables, intervals, pictures; works offline)",
        description="Write (again) a study's self-contained HTML report from its runs in the index.",
    )
    parser.add_argument(
        "study", help="study name, or its folder (RUNS_DIR/NAME, as `overfitlab study` prints)"
    )
    parser.add_argument("--runs-dir", default="runs", help="folder holding index.sqlite (default: runs)")
    parser.add_argument("--out", metavar="FILE", help="where to write (default: RUNS_DIR/STUDY/report.html)")
    parser.set_defaults(handler=run)
