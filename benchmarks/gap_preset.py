"""(b) The GAP preset on MNIST, one epoch: a 3 958-parameter model, where data handling dominates.

The tutorial's ``GAPcnn`` trained with the tutorial's loop and recipe
(baseline) against overfitlab's ``seed-gap`` preset (the same layers) through
the API (benchmark (a) compares the API with the command line); compared on
the epoch time (training plus validation).
"""

from __future__ import annotations

from . import common
from .harness import alternate
from .options import Options, has_mnist

NAME = "gap_preset"
TITLE = "(b) seed-gap (the tutorial's GAPcnn) on MNIST, 1 epoch"


def run(opts: Options, log=print) -> dict:
    if not has_mnist(opts.data_root):
        return {"skipped": f"MNIST not found under {opts.data_root}: pass --data-root"}
    threads = max(opts.threads)
    config = common.mnist_config(opts, threads, "seed-gap")
    contenders = [common.tutorial(opts, threads, "gap"), common.overfitlab_api(opts, threads, config)]
    title = f"{TITLE}, {threads} thread{'s' if threads > 1 else ''}"
    log(title)
    comparison = alternate(
        title,
        contenders,
        opts.repeats,
        opts.warmup,
        metrics=("epoch_seconds", "train_seconds", "valid_seconds"),
        shown=("valid_acc", "wall_seconds"),
        log=log,
    )
    return {"comparisons": [comparison]}
