"""(d) Peak memory of a full MNIST run: the peak resident set of a fresh process.

One run of each, full training and validation sets, one epoch (``--memory-epochs``):
the tutorial's loop, ``overfitlab.runs.train`` saving its run folder, and
``overfitlab train`` (which also draws curves.png). ``max_rss_mib`` is the
process's peak resident memory (``ru_maxrss`` from ``wait4``), imports and
interpreter shutdown included (torch alone is about half a GiB; shutdown pages in
~80 MiB of library code); ``run_max_rss_mib`` is the peak at the end of the run,
read in the process itself (not available for the command line).
"""

from __future__ import annotations

from . import common
from .harness import alternate
from .options import Options, has_mnist

NAME = "peak_memory"
TITLE = "(d) peak memory of a full MNIST run"
LIMIT_MIB = 1024


def run(opts: Options, log=print) -> dict:
    if not has_mnist(opts.data_root):
        return {"skipped": f"MNIST not found under {opts.data_root}: pass --data-root"}
    threads = max(opts.threads)
    config = common.mnist_config(opts, threads, "seed-cnn", hidden=16)
    contenders = [
        common.tutorial(opts, threads, "cnn"),
        common.overfitlab_api(opts, threads, config),
        common.overfitlab_cli(opts, threads, config),
    ]
    log(TITLE)
    comparison = alternate(
        TITLE,
        contenders,
        1,
        0,
        metrics=("max_rss_mib",),
        shown=("run_max_rss_mib", "epoch_seconds", "valid_acc"),
        log=log,
    )
    peaks = {name: max(r["max_rss_mib"] for r in runs) for name, runs in comparison.runs.items()}
    return {
        "comparisons": [comparison],
        "peak_mib": peaks,
        "limit_mib": LIMIT_MIB,
        "under_limit": {name: peak < LIMIT_MIB for name, peak in peaks.items()},
    }
