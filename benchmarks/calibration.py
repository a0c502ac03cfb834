"""Calibration of the adaptive decisions (``overfitlab.sequential``) by simulation.

    python -m benchmarks.calibration                       # 4000 null studies, power at +0.01/+0.02
    python -m benchmarks.calibration --spreads runs/truth  # paired spreads read from a study

Each simulated study is the default ``--seeds auto`` design (stages of 5 and 5 seeds, 10
remedies, δ = 0.01): every remedy's paired differences (remedy − baseline, held-out accuracy)
are drawn stage by stage from a normal law with that remedy's own spread, a remedy leaves the
study once decided or futile, exactly as ``overfitlab study`` spends its seeds. Printed: the
family-wise rate of false "helps"/"hurts" claims where nothing differs, with its 95 %
Clopper-Pearson interval, and the power to call a remedy "helps" at +0.01 and +0.02.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
import time
from pathlib import Path

import numpy as np
from scipy import stats as sps

from overfitlab.sequential import Answer, Design, simulated
from overfitlab.studies.spec import MAX_SEEDS, stage_sizes

# Paired spreads (std of remedy − baseline over seeds) of the ten remedies of the digits study,
# measured on the five studies of `python -m benchmarks.decisions --ranges 5` (seeds 100-149,
# 30 to 50 pairs each: l2, early-stopping, batchnorm, more-data, l1, weight-decay, gap-head,
# augmentation, dropout, all-remedies); --spreads reads them from a study instead.
DIGITS_SPREADS = (0.0084, 0.0088, 0.0108, 0.0113, 0.0131, 0.0142, 0.0143, 0.0149, 0.0168, 0.0337)


def spreads_of(study_dir: Path) -> tuple[float, ...]:
    """Each remedy's paired std on the returned model's valid accuracy, from a study's index."""
    index = study_dir.parent / "index.sqlite"
    with sqlite3.connect(index) as db:
        rows = db.execute(
            "select variant, seed, final_valid_acc from runs where study = ? and status = 'complete'",
            (study_dir.name,),
        ).fetchall()
    by: dict[str, dict[int, float]] = {}
    for variant, seed, acc in rows:
        by.setdefault(variant, {})[seed] = acc
    base = by.pop("baseline")
    out = []
    for values in by.values():
        seeds = sorted(set(values) & set(base))
        out.append(float(np.std([values[s] - base[s] for s in seeds], ddof=1)))
    return tuple(sorted(out))


def simulate(effects: list[float], spreads: tuple[float, ...], design: Design, rng: np.random.Generator):
    """A simulated study: every remedy's decision, and the paired seeds it spent in all."""
    answers = [simulated(e, s, design, rng) for e, s in zip(effects, spreads, strict=True)]
    return answers, sum(a.seeds for a in answers)


def clopper_pearson(k: int, n: int) -> tuple[float, float]:
    low = 0.0 if k == 0 else float(sps.beta.ppf(0.025, k, n - k + 1))
    high = 1.0 if k == n else float(sps.beta.ppf(0.975, k + 1, n - k))
    return low, high


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.calibration", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--studies", type=int, default=4000, help="simulated null studies (default 4000)")
    parser.add_argument("--power-studies", type=int, default=1000, help="per effect (default 1000)")
    parser.add_argument("--spreads", type=Path, help="a study folder to read the paired spreads from")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    spreads = spreads_of(args.spreads) if args.spreads else DIGITS_SPREADS
    design = Design(stages=stage_sizes(MAX_SEEDS), remedies=len(spreads), margin=0.01)
    rng = np.random.default_rng(args.seed)
    started = time.perf_counter()
    false = 0
    seeds = []
    for _ in range(args.studies):
        answers, used = simulate([0.0] * len(spreads), spreads, design, rng)
        false += any(a.answer in (Answer.HELPS, Answer.HURTS) for a in answers)
        seeds.append(used)
    low, high = clopper_pearson(false, args.studies)
    figures: dict[str, object] = {
        "spreads": spreads,
        "null_studies": args.studies,
        "false_claims": false,
        "family_wise_rate": false / args.studies,
        "interval": [low, high],
        "mean_seeds_per_remedy": float(np.mean(seeds)) / len(spreads),
    }
    print(f"paired spreads: {', '.join(f'{s:.4f}' for s in spreads)}")
    print(
        f"null: {false} of {args.studies} studies made a false claim: family-wise rate "
        f"{false / args.studies:.4f} [{low:.4f}, {high:.4f}] (target ≤ 0.05); "
        f"{np.mean(seeds) / len(spreads):.1f} seeds per remedy on average"
    )
    for effect in (0.01, 0.02):
        for spread in (min(spreads), float(np.median(spreads))):
            found = 0
            for _ in range(args.power_studies):
                d, _used = simulate([effect], (spread,), design, rng)
                found += d[0].answer is Answer.HELPS
            figures[f"power_{effect}_{spread:.4f}"] = found / args.power_studies
            print(f"power at +{effect} (paired std {spread:.4f}): {found / args.power_studies:.3f}")
    print(f"({time.perf_counter() - started:.0f} s)")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
