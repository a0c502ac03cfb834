"""``overfitlab summary``: the per-layer table and parameter counts of a model."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from ..errors import OverfitlabError

if TYPE_CHECKING:
    from ._common import SubParsers


def parse_shape(text: str) -> tuple[int, int, int]:
    try:
        shape = tuple(int(part) for part in text.split(","))
    except ValueError:
        shape = ()
    if len(shape) != 3 or min(shape) < 1:
        raise OverfitlabError(f"bad --input {text!r}: give channels,height,width such as 1,28,28")
    return shape


def run(args: argparse.Namespace) -> int:
    from ..models import list_models, model_spec
    from ..summary import compare_heads, summarize

    if args.list or not args.model:
        for name in list_models():
            print(f"{name:<10} {model_spec(name)}")
        return 0
    shape = parse_shape(args.input)
    overrides = dict(
        hidden=args.hidden, blocks=args.blocks, batchnorm=args.batchnorm, dropout=args.dropout, head=args.head
    )
    if args.compare:
        heads = [h.strip() for h in args.compare.split(",") if h.strip()]
        bad = [h for h in heads if h not in ("fc", "gap")]
        if bad or not heads:
            raise OverfitlabError(f"bad --compare {args.compare!r}: use fc,gap")
        overrides.pop("head")
        print(compare_heads(args.model, heads, shape, args.classes, **overrides))
        return 0
    if args.dropout is not None and not 0 <= args.dropout < 1:
        raise OverfitlabError(f"dropout must be in [0, 1), got {args.dropout}")
    print(summarize(args.model, shape, args.classes, **overrides))
    return 0


def add_parser(subparsers: SubParsers) -> None:
    parser = subparsers.add_parser("summary", help="per-layer table and parameter counts of a model")
    parser.add_argument("model", nargs="?", help="model preset, e.g. seed-cnn, seed-fc, seed-gap")
    parser.add_argument("--list", action="store_true", help="list the model presets")
    parser.add_argument("--hidden", type=int, help="channels of the first block")
    parser.add_argument("--blocks", type=int, help="number of conv blocks")
    parser.add_argument("--batchnorm", action=argparse.BooleanOptionalAction, default=None)
    parser.add_argument("--dropout", type=float)
    parser.add_argument("--head", choices=("fc", "gap"))
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--input", default="1,28,28", metavar="C,H,W", help="input shape (default: 1,28,28)")
    parser.add_argument("--compare", metavar="fc,gap", help="heads side by side with the head's share")
    parser.set_defaults(handler=run)
