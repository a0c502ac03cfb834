"""The default diagnosis on the built-in digits, local pool: its wall time (the target: ≤ 90 s on 2 cores).

    .venv/bin/python -m benchmarks.diagnosis [--budget standard] [--repeats 1]

Each repeat is a fresh ``overfitlab diagnose`` process in a temporary runs folder; the
baseline printed beside it is one run of the recipe (``overfitlab train``), so the ratio
says how many runs' worth of time the whole battery takes.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def timed(*args: str, cwd: Path) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "overfitlab", *args], cwd=cwd, check=True, capture_output=True)
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", default="standard", choices=("quick", "standard", "full"))
    parser.add_argument("--repeats", type=int, default=1)
    options = parser.parse_args(argv)
    print(f"machine: {os.cpu_count()} cores")
    for repeat in range(options.repeats):
        with tempfile.TemporaryDirectory(prefix="overfitlab-diagnosis-") as tmp:
            work = Path(tmp)
            one = timed(
                "train",
                "--train-size",
                "300",
                "--hidden",
                "16",
                "--no-batchnorm",
                "--dropout",
                "0",
                "--epochs",
                "60",
                "--threads",
                "1",
                "--quiet",
                "--runs-dir",
                str(work / "one"),
                cwd=work,
            )
            wall = timed("diagnose", "--budget", options.budget, "--quiet", "--runs-dir", str(work), cwd=work)
        print(
            f"repeat {repeat + 1}: diagnose --budget {options.budget} {wall:.1f} s wall "
            f"(target <= 90 s); one baseline run {one:.1f} s: {wall / one:.1f} runs' worth"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
