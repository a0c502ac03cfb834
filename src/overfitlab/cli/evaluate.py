"""``overfitlab evaluate``: a saved model's loss and accuracy on a data set."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._common import SubParsers


def run(args: argparse.Namespace) -> int:
    # start-up: loaded for this command only (torch, matplotlib, scipy)
    from ..runs.evaluation import evaluate

    result = evaluate(
        args.run_dir,
        dataset=args.dataset,
        checkpoint=args.checkpoint,
        split=args.split,
        data_dir=args.data_dir,
    )
    print(json.dumps(result.to_dict()) if args.json else result)
    return 0


def add_parser(subparsers: SubParsers) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="loss and accuracy of a saved model on a data set",
        description="Loss and accuracy of a run's saved model, fed as in training (its input scaling, "
        "batch size and loss): on the run's own validation split, or on another data set of the same "
        "image shape and classes.",
    )
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a run folder printed by `overfitlab train`")
    parser.add_argument("--dataset", help="data set to measure on (default: the run's own)")
    parser.add_argument("--data-dir", help="folder of the torchvision data sets, for --dataset")
    parser.add_argument(
        "--checkpoint", choices=("best", "last"), default="best", help="best.pt or last.pt (default: best)"
    )
    parser.add_argument(
        "--split", choices=("valid", "train"), default="valid", help="which split (default: valid)"
    )
    parser.add_argument("--json", action="store_true", help="print the result as one JSON object")
    parser.set_defaults(handler=run)
