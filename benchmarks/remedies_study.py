"""(c) The ``remedies`` study (digits) against the tutorial's loop run once per planned run.

Contenders, each in a fresh process and alternated:

- the tutorial's loop once per run of the study (baseline): same runs, same
  training subsets and seeds, same models (with ``nn.Dropout``), same epochs,
  the tutorial's DataLoader over images converted one by one with ``ToTensor``,
  on every core;
- ``run_study(backend="serial")``, one thread per run;
- ``run_study(backend="local")``, one worker per core, one thread each.

Serial and local runs have the same recipe, seed and thread count, so their
per-run metrics must be identical: the benchmark checks it in every repeat
and reports the local/serial speed-up beside.
"""

from __future__ import annotations

from overfitlab.studies.backends import available_cores

from .common import remedies_study
from .harness import Comparison, Contender, alternate, run_worker
from .options import Options

NAME = "remedies_study"
TITLE = "(c) remedies study on digits"


def run(opts: Options, log=print) -> dict:
    base = {"epochs": opts.study_epochs} if opts.study_epochs else None
    plans = run_worker(
        "plans", {"preset": "remedies", "seeds": opts.study_seeds, "base": base, "threads": 1}
    ).output["plans"]
    cores = available_cores()
    tutorial_threads = max(opts.threads)

    def tutorial(warm: bool) -> dict:
        chosen = plans[:1] if warm else plans
        result = run_worker(
            "tutorial_digits_runs",
            {"plans": chosen, "threads": tutorial_threads},
            tutorial_threads,
            timeout=opts.timeout,
        )
        return {**result.output, "wall_seconds": result.wall_seconds}

    contenders = [
        Contender(f"tutorial loop × {len(plans)} runs", tutorial, baseline=True),
        remedies_study(opts, "study serial, 1 thread", 1, base, backend="serial"),
        remedies_study(
            opts, f"study local, {cores} workers × 1 thread", 1, base, backend="local", workers=cores
        ),
    ]
    title = f"{TITLE}: {len(plans)} runs ({opts.study_seeds} seed{'s' if opts.study_seeds > 1 else ''})"
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
    return {"comparisons": [comparison], "local_vs_serial": local_vs_serial(comparison, contenders)}


def local_vs_serial(comparison: Comparison, contenders: list[Contender]) -> dict:
    """Speed-up of the local backend over serial, and whether every run's metrics were identical."""
    serial = comparison.runs.get(contenders[1].name, [])
    local = comparison.runs.get(contenders[2].name, [])
    identical = [s["per_run"] == lo["per_run"] for s, lo in zip(serial, local, strict=True)]
    medians = comparison.medians()
    ratio = (
        medians[contenders[1].name]["seconds"] / medians[contenders[2].name]["seconds"]
        if serial and local
        else None
    )
    return {
        "speedup": ratio,
        "identical_metrics": all(identical) if identical else None,
        "repeats_compared": len(identical),
    }
