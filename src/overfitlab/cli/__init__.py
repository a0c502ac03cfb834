"""The ``overfitlab`` command: a thin skin over the Python API.

Each command lives in its own module with ``add_parser(subparsers)``; this
module assembles them and turns every OverfitlabError into one line on stderr
and exit status 2 (a traceback only with ``--debug``).
"""

from __future__ import annotations

import os
import sys

from ..errors import OverfitlabError
from ..version import __version__
from . import diagnose, evaluate, labels, report, runs, study, summary, train
from ._common import OneLineParser

COMMANDS = (train, summary, evaluate, study, diagnose, labels, runs, report)


def build_parser() -> OneLineParser:
    parser = OneLineParser(
        prog="overfitlab", description="See over-fitting in image classifiers and fight it, measured."
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    parser.add_argument("--version", action="version", version=f"overfitlab {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=OneLineParser)
    sub.required = True
    for module in COMMANDS:
        module.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # start-up: loaded for this command only (torch, matplotlib, scipy)
    from ..environment import keep_freed_memory

    keep_freed_memory()  # this process is the command's: tune its allocator for training
    try:
        return args.handler(args) or 0
    except BrokenPipeError:
        # The reader went away (`overfitlab runs show x | head`): nothing left to say to it.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt as err:  # Interrupted says what it left
        if args.debug:
            raise
        print(f"overfitlab: interrupted {err}".rstrip(), file=sys.stderr)
        return 130
    except OverfitlabError as err:
        if args.debug:
            raise
        print(f"overfitlab: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
