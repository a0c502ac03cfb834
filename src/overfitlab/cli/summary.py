"""``overfitlab summary``: the per-layer table and parameter counts of a model."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from ..catalog import BUILTIN
from ..errors import OverfitlabError

# The input shape (C, H, W) and classes of each built-in data set, known without loading it:
# a CNN's parameter count depends on the input (seed-cnn h=8: 80,806 on 28×28, 8,806 on 8×8).
DATASET_SHAPES = {name: (b.shape, b.classes) for name, b in BUILTIN.items()}

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


def input_of(args: argparse.Namespace) -> tuple[tuple[int, int, int], int]:
    """(input shape, classes) from --dataset or --input and --classes (default: MNIST's)."""
    if args.dataset is not None:
        if args.input is not None:
            raise OverfitlabError("pass --dataset or --input, not both: the data set fixes the input shape")
        if args.dataset in DATASET_SHAPES:  # known without loading it
            shape, classes = DATASET_SHAPES[args.dataset]
            return shape, args.classes or classes
        # start-up: loaded for this command only (torch, matplotlib, scipy)
        from ..data.registry import load_dataset
        from ..data.split import DataOptions
        from ..textvalues import parse_image_size

        size = parse_image_size(args.image_size) if args.image_size else None
        data = load_dataset(args.dataset, options=DataOptions(args.data_dir, False, args.channels, size))
        return data.image_shape, args.classes or data.classes
    return parse_shape(args.input or "1,28,28"), args.classes or 10


def run(args: argparse.Namespace) -> int:
    # start-up: loaded for this command only (torch, matplotlib, scipy)
    from ..models.cnn import PRESETS, model_spec
    from ..models.registry import list_models
    from ..models.summary import compare_heads, summarize
    from ..textvalues import parse_model_arg

    if args.list or not args.model:
        for name in list_models():
            print(f"{name:<10} {model_spec(name) if name in PRESETS else 'registered factory'}")
        print("and torchvision:NAME, timm:NAME, package.module:function, path/to/file.py:function")
        return 0
    shape, classes = input_of(args)
    if args.classes is not None and args.classes < 2:
        raise OverfitlabError(f"--classes must be ≥ 2, got {args.classes}")
    overrides = dict(
        hidden=args.hidden,
        blocks=args.blocks,
        batchnorm=args.batchnorm,
        dropout=args.dropout,
        head=args.head,
    )
    if args.compare:
        heads = [h.strip() for h in args.compare.split(",") if h.strip()]
        bad = [h for h in heads if h not in ("fc", "gap")]
        if bad or not heads:
            raise OverfitlabError(f"bad --compare {args.compare!r}: use fc,gap")
        overrides.pop("head")
        print(compare_heads(args.model, heads, shape, classes, **overrides))
        return 0
    if args.dropout is not None and not 0 <= args.dropout < 1:
        raise OverfitlabError(f"dropout must be in [0, 1), got {args.dropout}")
    model_args = dict(map(parse_model_arg, args.model_arg or []))
    print(summarize(args.model, shape, classes, model_args, **overrides))
    return 0


def add_parser(subparsers: SubParsers) -> None:
    description = (
        "The per-layer table (layer, output shape, parameters), totals, sizes and mult-adds of a model."
    )
    parser = subparsers.add_parser(
        "summary", help="per-layer table and parameter counts of a model", description=description
    )
    parser.add_argument(
        "model",
        nargs="?",
        help="model: a preset (seed-cnn, seed-fc, seed-gap), torchvision:NAME, timm:NAME, "
        "package.module:function or path/to/file.py:function",
    )
    parser.add_argument(
        "--model-arg",
        action="append",
        metavar="KEY=VALUE",
        help="keyword argument of the model's factory, VALUE a TOML literal (repeatable)",
    )
    parser.add_argument("--list", action="store_true", help="list the model presets")
    parser.add_argument("--hidden", type=int, help="channels of the first block (default: the preset's)")
    parser.add_argument("--blocks", type=int, help="number of conv blocks (default: the preset's)")
    parser.add_argument(
        "--batchnorm",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="batch normalization after each conv (default: the preset's)",
    )
    parser.add_argument("--dropout", type=float, help="dropout probability (default: the preset's)")
    parser.add_argument("--head", choices=("fc", "gap"), help="classifier head (default: the preset's)")
    parser.add_argument(
        "--dataset",
        help="use this data set's input shape and classes (digits: 1,8,8; mnist: 1,28,28; "
        "folder:PATH and arrays:FILE.npz are read)",
    )
    parser.add_argument("--data-dir", help="folder of the torchvision data sets, for --dataset")
    parser.add_argument("--image-size", metavar="H[,W]", help="for --dataset folder:PATH, as in train")
    parser.add_argument("--channels", type=int, choices=(1, 3), help="for --dataset folder:PATH, as in train")
    parser.add_argument("--classes", type=int, help="output classes (default: the data set's, else 10)")
    parser.add_argument(
        "--input", metavar="C,H,W", help="input shape (default: 1,28,28, MNIST's; or the --dataset's)"
    )
    parser.add_argument("--compare", metavar="fc,gap", help="heads side by side with the head's share")
    parser.set_defaults(handler=run)
