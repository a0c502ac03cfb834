"""The study's and the diagnosis's answers against truth measured on real runs.

    python -m benchmarks.decisions --ranges 5     # the default study on 5 disjoint seed ranges
    python -m benchmarks.decisions --aa 20        # 20 real A/A studies: nothing differs
    python -m benchmarks.decisions --diagnose 5   # the default diagnosis on 5 disjoint ranges

Every study is the command a user runs (``overfitlab study --json``, one process each, the local
pool on all cores), on seeds that no other study of the run uses. Printed per study: its answers,
the seeds it spent and its wall time; then the counts the note of issue 18 asks for.

An A/A study's variants are the remedies preset's baseline recipe five times: the baseline and
four copies whose runs train on seeds shifted by 1000·i (``seed_offset``), so each copy is the same
recipe on an independent seed stream, paired with the baseline by the nominal seed. Any "helps" or
"hurts" there is a false claim.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from scipy import stats as sps

from overfitlab.studies.presets import REMEDIES_BASE

HELPING = ("more-data", "batchnorm")  # what 20 seeds show (README, issue 18)


def _run(command: list[str], cwd: Path) -> tuple[dict, float]:
    started = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    if done.returncode not in (0, 1):
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout), wall


def overfitlab(*args: str) -> list[str]:
    return [sys.executable, "-m", "overfitlab", *args]


def ranges(count: int, root: Path) -> None:
    helps = {name: 0 for name in HELPING}
    others = 0
    for k in range(count):
        first = 100 + 10 * k
        result, wall = _run(overfitlab("study", "--json", "--quiet", "--first-seed", str(first)), root)
        decided = {d["variant"]: d for d in result["decisions"]}
        for name in HELPING:
            helps[name] += decided[name]["answer"] == "helps"
        wrong = [v for v, d in decided.items() if v not in HELPING and d["answer"] == "helps"]
        others += len(wrong)
        print(f"seeds {first}-{first + 9}: {result['runs']} runs, {wall:.1f} s wall")
        for d in result["decisions"]:
            print(f"  {d['variant']:<15} {d['sentence']}")
    print(
        f"helps, of {count}: "
        + ", ".join(f"{name} {helps[name]}" for name in HELPING)
        + f"; any other remedy: {others}"
    )


AA_SPEC = """
name = "aa"
seeds = "auto"
[base]
{base}
[[variant]]
name = "baseline"
{copies}
"""


def aa(count: int, root: Path) -> None:
    base = "\n".join(
        f"{k} = {json.dumps(v) if v is not None else json.dumps('none')}" for k, v in REMEDIES_BASE.items()
    )
    copies = "\n".join(f'[[variant]]\nname = "copy-{i}"\nseed_offset = {1000 * i}' for i in range(1, 5))
    spec = root / "aa.toml"
    spec.write_text(AA_SPEC.format(base=base, copies=copies), encoding="utf-8")
    false, seeds, walls = 0, [], []
    for k in range(count):
        first = 200 + 10 * k
        result, wall = _run(
            overfitlab(
                "study", str(spec), "--json", "--quiet", "--first-seed", str(first), "--name", f"aa-{k}"
            ),
            root,
        )
        claims = [d for d in result["decisions"] if d["answer"] in ("helps", "hurts")]
        false += bool(claims)
        seeds.append(result["runs"])
        walls.append(wall)
        answers = ", ".join(f"{d['variant']} {d['answer']}" for d in result["decisions"])
        print(f"A/A seeds {first}-{first + 9}: {result['runs']} runs, {wall:.1f} s: {answers}")
    low = 0.0 if false == 0 else float(sps.beta.ppf(0.025, false, count - false + 1))
    high = float(sps.beta.ppf(0.975, false + 1, count - false))
    rate = f"{false / count:.3f}, 95 % [{low:.3f}, {high:.3f}]"
    print(f"A/A: {false} of {count} studies made a false claim ({rate})")


def diagnoses(count: int, root: Path) -> None:
    strong = 0
    for k in range(count):
        first = 500 + 10 * k
        result, wall = _run(
            overfitlab("diagnose", "--json", "--quiet", "--first-seed", str(first), "--name", f"dx-{k}"), root
        )
        grade = result["overfitting"]["severity"]
        strong += grade == "strong"
        print(f"diagnosis seeds {first}-: {grade}, {wall:.1f} s wall\n  {result['verdict']}")
    print(f"diagnosis: strong in {strong} of {count}")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.decisions")
    parser.add_argument("--ranges", type=int, default=0)
    parser.add_argument("--aa", type=int, default=0)
    parser.add_argument("--diagnose", type=int, default=0)
    parser.add_argument("--workdir", type=Path, help="keep the runs here (default: a temporary folder)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="overfitlab-decisions-") as tmp:
        root = args.workdir or Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        if args.ranges:
            ranges(args.ranges, root)
        if args.aa:
            aa(args.aa, root)
        if args.diagnose:
            diagnoses(args.diagnose, root)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
