"""Learning curves measured on real runs, and the backtest that chooses how the diagnosis
extrapolates them.

    python -m benchmarks.learning_curves --measure digits
    python -m benchmarks.learning_curves --measure mnist --data-root /work/shared/data
    python -m benchmarks.learning_curves --measure fashion-mnist --data-root /work/shared/data
    python -m benchmarks.learning_curves --backtest            # the table, from the saved curves

``--measure`` trains the diagnosis's recipe (the remedies preset's baseline: seed-cnn h16, no
batch norm or dropout, Adam 0.01, batch 32; 60 epochs on the digits, 20 on MNIST and
Fashion-MNIST) at sizes n₀·2^(k/2), 10 seeds each, on the data the diagnosis trains on (its test
split carved off first), and saves every seed's final valid accuracy to
``benchmarks/curves/DATASET.json`` (committed: the backtest and its test read them).

``--backtest`` replays what the diagnosis does on every window of five consecutive sizes (a 4×
range, the standard budget's) with the seeds split into disjoint halves of five (the seeds the
diagnosis's size variants get): each candidate method fits the window and predicts the mean
valid accuracy at 2× and 4× its largest size, against the 10-seed mean measured there.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

CURVES = Path(__file__).parent / "curves"
# Per data set: the recipe's epochs and the smallest size of the grid (sizes n₀·2^(k/2) up to
# the largest the carved training split holds, capped where 10 seeds would take too long).
GRIDS = {
    "digits": {"epochs": 60, "smallest": 38, "largest": 1077},
    "mnist": {"epochs": 20, "smallest": 100, "largest": 12800},
    "fashion-mnist": {"epochs": 20, "smallest": 100, "largest": 6400},
}
SEEDS = 10


def grid(smallest: int, largest: int) -> list[int]:
    sizes, k = [], 0
    while round(smallest * 2 ** (k / 2)) <= largest:
        sizes.append(round(smallest * 2 ** (k / 2)))
        k += 1
    return sizes


def measure(dataset: str, data_root: str | None) -> Path:
    # start-up: torch only for measuring
    from overfitlab.config import Config, apply_overrides, data_options
    from overfitlab.data.registry import load_dataset
    from overfitlab.diagnosis.experiments import carve_test
    from overfitlab.studies.loop import run_study
    from overfitlab.studies.presets import REMEDIES_BASE
    from overfitlab.studies.spec import make_spec

    settings = GRIDS[dataset]
    base = {**REMEDIES_BASE, "dataset": dataset, "epochs": settings["epochs"]}
    base.pop("train_size")
    if data_root and dataset != "digits":
        base.update(data_dir=data_root, download=False)
    config = apply_overrides(Config(), base, "the recipe")
    data = carve_test(load_dataset(config.dataset, options=data_options(config))).data
    sizes = [n for n in grid(settings["smallest"], settings["largest"]) if n <= len(data.train)]
    if len(data.train) not in sizes and len(data.train) <= settings["largest"]:
        sizes.append(len(data.train))
    variants = [(f"size-{n}", {"train_size": n}) for n in sizes]
    spec = make_spec(base, variants, SEEDS, name=f"curve-{dataset}")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        study = run_study(spec, folder, f"curve-{dataset}", backend="local", report=False, data=data)
    accuracies: dict[int, list[float]] = {n: [] for n in sizes}
    for row in study.runs:
        if row["status"] == "complete":
            accuracies[int(row["variant"].removeprefix("size-"))].append(float(row["final_valid_acc"]))
    if study.failed:
        first = study.failed[0]
        raise SystemExit(f"{len(study.failed)} runs failed; {first['variant']}: {first.get('error')}")
    out = {
        "dataset": dataset,
        "recipe": {k: v for k, v in base.items() if k not in ("data_dir", "download")},
        "train_pool": len(data.train),
        "valid_images": len(data.valid),
        "wall_seconds": round(time.perf_counter() - started, 1),
        "sizes": sizes,
        "valid_acc": [accuracies[n] for n in sizes],  # per size, per seed 0..9
    }
    CURVES.mkdir(exist_ok=True)
    path = CURVES / f"{dataset}.json"
    path.write_text(json.dumps(out, indent=1) + "\n")
    print(f"{dataset}: {len(sizes)} sizes × {SEEDS} seeds in {out['wall_seconds']} s -> {path}")
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.learning_curves", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--measure", choices=sorted(GRIDS), help="train and save one data set's curve")
    parser.add_argument("--data-root", help="folder holding MNIST/ and FashionMNIST/")
    parser.add_argument("--backtest", action="store_true", help="the backtest table from the saved curves")
    args = parser.parse_args(argv)
    if args.measure:
        measure(args.measure, args.data_root)
    if args.backtest:
        from . import backtest  # start-up: scipy only for the backtest

        backtest.main(CURVES)
    if not (args.measure or args.backtest):
        parser.error("pass --measure DATASET or --backtest")


if __name__ == "__main__":
    main(sys.argv[1:])
