"""``overfitlab labels``: which images are mislabelled, in every split, as a list to act on."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING

from ._common import add_config_flags, add_output_flags, eta_line
from .study import base_overrides

if TYPE_CHECKING:
    from ..labels.issues import LabelIssues
    from ._common import SubParsers


def summary(found: LabelIssues, top: int) -> list[str]:
    """What a person reads: how many, where, which classes, the first rows."""
    images = ", ".join(f"{split} {n:,}" for split, n in found.images.items())
    e = found.estimated
    lines = [
        f"Scored {sum(found.images.values()):,} images ({images}) with models that never trained on "
        f"them: out-of-fold accuracy {found.accuracy:.3f}.",
        f"Confident learning flags {len(found.issues):,} images; about {e.estimate:,} [{e.low:,}, "
        f"{e.high:,}] are estimated mislabelled.",
    ]
    names = found.class_names
    pairs = sorted(
        ((n, g, s) for g, row in enumerate(found.confusion) for s, n in enumerate(row) if n and g != s),
        reverse=True,
    )[:5]
    if pairs:
        lines.append(
            "Most flagged, given → suggested: "
            + ", ".join(f"{names[g]} → {names[s]} ({n})" for n, g, s in pairs)
            + "."
        )
    if len(names) <= 12 and len(found.issues) >= 10:  # a table of a few dots says less than the pairs
        # Names that fit a column head it; longer ones ("0 - zero", "T-shirt/top") go by number.
        short = list(names) if max(map(len, names)) <= 6 else [str(k) for k in range(len(names))]
        numbered = short == list(names) or all(n.startswith(str(k)) for k, n in enumerate(names))
        legend = "" if numbered else " (" + ", ".join(f"{k} {n}" for k, n in enumerate(names)) + ")"
        lines.append(f"Flagged images, given (rows) against suggested (columns){legend}:")
        lines.append(" " * 8 + "".join(f"{n:>7}" for n in short))
        for g, row in enumerate(found.confusion):
            lines.append(f"{short[g]:>7} " + "".join(f"{n if n else '.':>7}" for n in row))
    rows = found.rows(top)
    if rows:
        lines.append(f"{'rank':>4}  {'split':<5} {'index':>6}  {'given':<12} {'suggested':<12} score")
        lines += [
            f"{r['rank']:>4}  {r['split']:<5} {r['index']:>6}  {r['given_name'][:12]:<12} "
            f"{r['suggested_name'][:12]:<12} {r['score']:.4f}"
            for r in rows
        ]
    return lines


def run(args: argparse.Namespace) -> int:
    # start-up: loaded for this command only (torch, matplotlib, scipy)
    from ..labels.finder import CSV_FILE, find_label_issues

    shown = not args.quiet and sys.stderr.isatty()
    show = eta_line(shown)
    name = args.resume or args.name
    found = find_label_issues(
        base_overrides(args),
        runs_dir=args.runs_dir,
        name=name,
        budget=args.budget,
        folds=args.folds,
        resume=bool(args.resume),
        progress=lambda done, total: show("folds", done, total),
    )
    if shown:
        print(file=sys.stderr)
    if args.json:
        print(json.dumps(found.to_dict(args.top)))
        return 0
    print("\n".join(summary(found, args.top or 10)))
    if found.folder is not None:
        print(f"every flagged image: {found.folder / CSV_FILE}")
    return 0


def add_parser(subparsers: SubParsers) -> None:
    parser = subparsers.add_parser(
        "labels",
        help="which images are mislabelled, in every split: a ranked list to act on",
        description="Score every labelled image of every split with models that never trained on it "
        "(stratified folds over all splits), then flag, rank and count label issues with confident "
        "learning (cleanlab). Writes RUNS_DIR/NAME/label-issues.csv and label-issues.json; "
        "`train --exclude FILE` or `--relabel FILE` acts on the CSV.",
    )
    parser.add_argument(
        "--budget",
        choices=("quick", "standard", "full"),
        default="standard",
        help="epochs per fold and averaging (4 folds each): quick 2 epochs; standard 4, the last 2 "
        "averaged, with shifted copies; full 8, the last 4 averaged, shifted copies (default: standard)",
    )
    parser.add_argument("--folds", type=int, help="folds (default: the budget's)")
    parser.add_argument("--top", type=int, help="rows printed (default: 10; --json: every flagged image)")
    add_output_flags(
        parser,
        "label search",
        json_help="print the ranked rows as JSON",
        resume_help="finish an interrupted search: done folds are kept",
        holds="run and label search folders",
    )
    add_config_flags(parser, skip=("train_size", "label_noise"))
    parser.set_defaults(handler=run)
