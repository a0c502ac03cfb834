"""``python -m benchmarks``: run the suite, print medians and ratios, write JSON to bench-results/.

    python -m benchmarks                   # everything, default repeats (~15 min on 2 cores)
    python -m benchmarks --quick           # every code path in a couple of minutes, numbers meaningless
    python -m benchmarks --only mnist gap  # some benchmarks: mnist, gap, study, memory
    python -m benchmarks --only stacking --device cuda   # seeds stacked with vmap (not in the default run)
    python -m benchmarks --repeats 5 --threads 2

Measure on a quiet machine: anything else running shifts every figure (the
load average before and after each benchmark is saved with its results).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from . import gap_preset, mnist_recipe, peak_memory, remedies_study, stacked_seeds
from .harness import BenchmarkError, Comparison, format_table, machine, write_json
from .options import Options

BENCHMARKS = {
    "mnist": mnist_recipe,
    "gap": gap_preset,
    "study": remedies_study,
    "memory": peak_memory,
    "stacking": stacked_seeds,
}
# Stacking is for GPUs: on request only (--only stacking), not in the default run.
DEFAULT = ("mnist", "gap", "study", "memory")


def parse_args(argv: list[str]) -> argparse.Namespace:
    defaults = Options()
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--only",
        nargs="+",
        choices=list(BENCHMARKS),
        metavar="NAME",
        help=f"benchmarks to run: {', '.join(BENCHMARKS)} (default: {', '.join(DEFAULT)})",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke check: 30 batches an epoch, 2-epoch study, 1 repeat, no warm-up",
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=defaults.repeats,
        help=f"measured runs per contender (default: {defaults.repeats})",
    )
    parser.add_argument(
        "--warmup",
        type=int,
        default=defaults.warmup,
        help=f"short unmeasured runs per contender first (default: {defaults.warmup})",
    )
    parser.add_argument(
        "--threads",
        type=int,
        nargs="+",
        default=list(defaults.threads),
        help="torch threads of the MNIST recipe benchmark; the others use the largest (default: 2 1)",
    )
    parser.add_argument(
        "--data-root",
        type=Path,
        default=defaults.data_root,
        help=f"folder holding MNIST/raw (default: {defaults.data_root})",
    )
    parser.add_argument(
        "--device",
        default=defaults.device,
        choices=("cpu", "cuda"),
        help="device of every contender (default: cpu)",
    )
    parser.add_argument(
        "--study-seeds",
        type=int,
        default=defaults.study_seeds,
        help=f"seeds of the remedies study (default: {defaults.study_seeds})",
    )
    parser.add_argument(
        "--study-epochs", type=int, default=None, help="epochs of every study run (default: the preset's)"
    )
    parser.add_argument(
        "--no-frameworks",
        dest="frameworks",
        action="store_false",
        help="leave out Lightning and Keras even when installed",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("bench-results"),
        help="folder of the JSON results (default: bench-results)",
    )
    args = parser.parse_args(argv)
    for name in ("repeats", "study_seeds"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be ≥ 1")
    if args.warmup < 0 or min(args.threads) < 1:
        parser.error("--warmup must be ≥ 0 and --threads ≥ 1")
    return args


def options_from(args: argparse.Namespace) -> Options:
    opts = Options(
        data_root=args.data_root,
        repeats=args.repeats,
        warmup=args.warmup,
        threads=tuple(dict.fromkeys(args.threads)),
        device=args.device,
        study_seeds=args.study_seeds,
        study_epochs=args.study_epochs,
        frameworks=args.frameworks,
    )
    return opts.quick_version() if args.quick else opts


def targets(results: dict, opts: Options) -> list[str]:
    """The issue's acceptance figures, read from the results."""
    lines = []

    def ratio(comparison: Comparison, contender: str, metric: str) -> float | None:
        return comparison.ratios().get(contender, {}).get(metric)

    def mark(ok: bool | None) -> str:
        return "n/a " if ok is None else ("met " if ok else "MISS")

    mnist = results.get("mnist", {}).get("comparisons", [])
    for comparison in mnist:
        if comparison.title.endswith(", 2 threads"):
            r = ratio(comparison, "overfitlab API", "train_seconds")
            acc = comparison.medians().get("overfitlab API", {}).get("valid_acc")
            ok = None if r is None or acc is None else (r <= 0.6 and acc >= 0.975)
            lines.append(
                f"{mark(ok)} 1. MNIST recipe, 2 threads: train time {_x(r)} of the tutorial's "
                f"(≤ 0.60×), valid acc {acc if acc is None else f'{acc:.4f}'} (≥ 0.975)"
            )
    for comparison in results.get("gap", {}).get("comparisons", []):
        r = ratio(comparison, "overfitlab API", "epoch_seconds")
        lines.append(
            f"{mark(None if r is None else r <= 0.4)} 2. seed-gap epoch time {_x(r)} "
            "of the tutorial's (≤ 0.40×)"
        )
    study = results.get("study", {})
    for comparison in study.get("comparisons", []):
        local = next((n for n in comparison.runs if n.startswith("study local")), None)
        r = ratio(comparison, local, "seconds") if local else None
        speed = None if not r else 1 / r
        lines.append(
            f"{mark(None if speed is None else speed >= 3)} 3. remedies study (local backend) "
            f"{_x(speed, 'faster')} than the tutorial's loop once per run (≥ 3×)"
        )
        lvs = study.get("local_vs_serial", {})
        speed, same = lvs.get("speedup"), lvs.get("identical_metrics")
        ok = None if speed is None else (speed >= 1.6 and bool(same))
        lines.append(
            f"{mark(ok)}    local vs serial {_x(speed, 'faster')} (≥ 1.6×), identical metrics: {same}"
        )
    memory = results.get("memory", {})
    for name, peak in memory.get("peak_mib", {}).items():
        if name.startswith("overfitlab"):
            lines.append(
                f"{mark(peak < peak_memory.LIMIT_MIB)} 4. peak memory, {name}: {peak:.0f} MiB (< 1024)"
            )
    if opts.quick:
        lines = [line.replace("met ", "ok? ").replace("MISS", "ok? ") for line in lines]
        lines.insert(0, "(--quick: partial epochs, so these ratios are not the targets' figures)")
    return lines


def _x(value: float | None, word: str = "") -> str:
    if value is None:
        return "n/a"
    return f"{value:.2f}×" + (f" {word}" if word else "")


def _jsonable(value):
    if isinstance(value, Comparison):
        return value.to_dict()
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    opts = options_from(args)
    names = args.only or list(DEFAULT)
    about = machine()
    print(
        f"machine: {about['cpu']}, {about['cores']} cores, torch {about['torch']}; "
        f"load average {about['load_average'][0]:.2f}" + ("  (--quick)" if opts.quick else "")
    )
    if about["load_average"][0] > 0.5 * about["cores"]:
        print("warning: the machine is busy; figures will be noisy (alternation spreads the noise)")
    started = time.perf_counter()
    results, failed = {}, []
    for name in names:
        module = BENCHMARKS[name]
        t0, load_before = time.perf_counter(), os.getloadavg()[0]
        try:
            result = module.run(opts, log=lambda line: print(line, flush=True))
        except BenchmarkError as err:
            print(f"{module.TITLE}: failed: {err}", file=sys.stderr)
            failed.append(name)
            continue
        results[name] = result
        if "skipped" in result:
            print(f"{module.TITLE}: skipped ({result['skipped']})")
            continue
        for comparison in result["comparisons"]:
            print(format_table(comparison))
        if "local_vs_serial" in result:
            lvs = result["local_vs_serial"]
            print(
                f"  local vs serial: {_x(lvs['speedup'], 'faster')}, identical metrics: "
                f"{lvs['identical_metrics']}"
            )
        payload = {
            "benchmark": module.NAME,
            "title": module.TITLE,
            "machine": about,
            "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(opts).items()},
            "seconds": time.perf_counter() - t0,
            "load_average_before": load_before,
            "load_average_after": os.getloadavg()[0],
            **_jsonable(result),
        }
        print(f"  → {write_json(args.out, module.NAME, payload)}\n", flush=True)
    lines = targets(results, opts)
    if lines:
        print("targets (issue 4):")
        print("\n".join("  " + line for line in lines))
    summary = {
        "machine": about,
        "seconds": time.perf_counter() - started,
        "targets": lines,
        "failed": failed,
        "benchmarks": names,
    }
    print(f"  → {write_json(args.out, 'suite', summary)}  ({summary['seconds'] / 60:.1f} min)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
