"""(e) Seeds stacked with ``vmap`` against seeds one by one: the ``remedies`` study on digits.

Both contenders run ``run_study(backend="serial")`` on ``--device`` with the
threads of the largest ``--threads``, in fresh processes, alternated; one with
``stack_seeds=True`` (``overfitlab study --stack-seeds``). Stacking exists for
GPUs, where a small CNN's step is mostly kernel launches; on a CPU it is
expected to lose. Not part of the default suite: ``--only stacking``
(``--device cuda`` where there is a GPU). The stacked runs' metrics equal the
one-by-one runs' up to rounding (dropout masks come from another random
stream, so variants with dropout differ more): the largest difference in best
valid accuracy is printed beside.
"""

from __future__ import annotations

from .common import remedies_study
from .harness import Comparison, Contender, alternate
from .options import Options

NAME = "stacked_seeds"
TITLE = "(e) remedies study on digits, seeds stacked vs one by one"


def run(opts: Options, log=print) -> dict:
    threads = max(opts.threads)
    base = {"device": opts.device, **({"epochs": opts.study_epochs} if opts.study_epochs else {})}

    contenders = [
        remedies_study(opts, "seeds one by one", threads, base, baseline=True, backend="serial"),
        remedies_study(opts, "seeds stacked", threads, base, backend="serial", stack_seeds=True),
    ]
    seeds = f"{opts.study_seeds} seed{'s' if opts.study_seeds > 1 else ''}"
    title = f"{TITLE}, {seeds}, {opts.device}, {threads} thread{'s' if threads > 1 else ''}"
    log(title)
    comparison = alternate(
        title,
        contenders,
        opts.repeats,
        opts.warmup,
        metrics=("seconds",),
        shown=("peak_valid_acc_mean", "wall_seconds"),
        log=log,
    )
    agreement = largest_difference(comparison, contenders)
    log(f"  largest |Δ best valid acc| of a run, stacked vs one by one: {agreement}")
    return {"comparisons": [comparison], "largest_acc_difference": agreement}


def largest_difference(comparison: Comparison, contenders: list[Contender]) -> float | None:
    """Over every repeat and run: the largest difference in best valid accuracy."""
    alone = comparison.runs.get(contenders[0].name, [])
    stacked = comparison.runs.get(contenders[1].name, [])
    gaps = [
        abs(a["per_run"][name][1] - s["per_run"][name][1])
        for a, s in zip(alone, stacked, strict=True)
        for name in a["per_run"]
    ]
    return max(gaps) if gaps else None
