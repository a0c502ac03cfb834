"""(a) The tutorial's recipe on MNIST, one epoch: seed-cnn h=16, batch 32, Adam 0.01.

Contenders: the tutorial's own loop (baseline), ``overfitlab.runs.train``,
and at the largest thread count also ``overfitlab train`` on the command line
and Lightning and Keras 3 (torch backend) when installed. Training and validation time are compared
separately; validation accuracy is printed beside (the tutorial's is the mean
of 312 shuffled batches of 32, overfitlab's covers all 10 000 images).
"""

from __future__ import annotations

from . import common
from .harness import alternate
from .options import Options, has_mnist

NAME = "mnist_recipe"
TITLE = "(a) tutorial recipe on MNIST, 1 epoch"


def run(opts: Options, log=print) -> dict:
    if not has_mnist(opts.data_root):
        return {"skipped": f"MNIST not found under {opts.data_root}: pass --data-root"}
    comparisons = []
    for threads in opts.threads:
        config = common.mnist_config(opts, threads, "seed-cnn", hidden=16)
        contenders = [common.tutorial(opts, threads, "cnn"), common.overfitlab_api(opts, threads, config)]
        # The command line and the other frameworks at the largest thread count only:
        # they take a third of the suite's time per thread count.
        if threads == max(opts.threads):
            contenders.append(common.overfitlab_cli(opts, threads, config))
        if opts.frameworks and threads == max(opts.threads):
            contenders += [
                common.framework(opts, threads, "Lightning", "lightning_mnist"),
                common.framework(opts, threads, "Keras 3 (torch)", "keras_mnist"),
            ]
        title = f"{TITLE}, {threads} thread{'s' if threads > 1 else ''}"
        log(title)
        comparisons.append(
            alternate(
                title,
                contenders,
                opts.repeats,
                opts.warmup,
                metrics=("train_seconds", "valid_seconds"),
                shown=("valid_acc", "wall_seconds", "max_rss_mib"),
                log=log,
            )
        )
    return {"comparisons": comparisons}
