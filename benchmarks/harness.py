"""Run contenders alternately, each in a fresh process; medians, ratios, JSON.

Every measured run is a new Python process (``python -m benchmarks.worker``):
no contender inherits another's warm caches, allocator state or thread
settings, and one-time costs (imports excluded, first-call kernel set-up
included) count as a user sees them. Contenders take turns within each repeat
(A B C, A B C, ...), so a burst of load elsewhere on the machine lands on all
of them rather than on one. A short warm-up run of each contender comes first
and is not counted: it fills the file cache and compiles the bytecode.
"""

from __future__ import annotations

import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent


class BenchmarkError(RuntimeError):
    """A contender's process failed; the message carries the end of its output."""


class Skipped(Exception):
    """A contender that cannot run here (an optional package missing); the reason is the message."""


# --------------------------------------------------------------------------- processes
@dataclass
class ProcessResult:
    output: dict  # what the worker function returned (or parsed from a command)
    wall_seconds: float  # process start to exit, imports included
    max_rss_mib: float  # peak resident memory of the process


def _wait(proc: subprocess.Popen, started: float, timeout: float | None) -> tuple[int, float, float]:
    """Wait for ``proc``; its exit status, wall time and peak RSS (MiB, from wait4)."""
    deadline = None if timeout is None else started + timeout
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            # ru_maxrss is in KiB on Linux.
            return proc.returncode, time.perf_counter() - started, usage.ru_maxrss / 1024
        if deadline is not None and time.perf_counter() > deadline:
            proc.kill()
            proc.wait()
            raise BenchmarkError(f"{proc.args!r} ran past {timeout:.0f} s and was stopped")
        time.sleep(0.01)


def run_process(
    argv: Sequence[str],
    env: dict | None = None,
    timeout: float | None = None,
    cwd: str | os.PathLike | None = None,
) -> tuple[str, float, float]:
    """Run a command; its stdout, wall seconds and peak RSS (MiB). Raises on a non-zero exit."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        started = time.perf_counter()
        proc = subprocess.Popen(list(argv), stdout=out, stderr=err, env=env, cwd=cwd)
        code, wall, rss = _wait(proc, started, timeout)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if code != 0:
        tail = (stderr or stdout).strip().splitlines()[-15:]
        raise BenchmarkError(f"{' '.join(map(str, argv[:6]))} ... exited with {code}:\n" + "\n".join(tail))
    return stdout, wall, rss


def worker_env(threads: int | None = None, extra: dict | None = None) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    if threads:
        # Before the interpreter starts, so OpenMP and MKL pools are sized once.
        for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            env[name] = str(threads)
    env.update(extra or {})
    return env


def run_worker(
    function: str,
    kwargs: dict,
    threads: int | None = None,
    env: dict | None = None,
    timeout: float | None = None,
) -> ProcessResult:
    """Call ``benchmarks.contenders.<function>(**kwargs)`` in a fresh process."""
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        result_path = Path(tmp) / "result.json"
        argv = [sys.executable, "-m", "benchmarks.worker", function, json.dumps(kwargs), str(result_path)]
        _, wall, rss = run_process(argv, env=worker_env(threads, env), timeout=timeout, cwd=REPO)
        output = json.loads(result_path.read_text())
    if output.get("skipped"):
        raise Skipped(output["skipped"])
    return ProcessResult(output, wall, rss)


# --------------------------------------------------------------------------- alternation
@dataclass
class Contender:
    name: str
    run: Callable[[bool], dict]  # run(warm_up) -> metrics dict (seconds, accuracy, ...)
    baseline: bool = False
    max_repeats: int | None = None  # reference points that need fewer repeats than the targets


@dataclass
class Comparison:
    """The repeats of every contender of one benchmark setting, and their medians."""

    title: str
    metrics: Sequence[str]  # keys compared against the baseline (seconds: lower is better)
    shown: Sequence[str] = ()  # keys printed beside, without a ratio (accuracy, ...)
    runs: dict[str, list[dict]] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    baseline: str | None = None

    def medians(self) -> dict[str, dict[str, float]]:
        out = {}
        for name, runs in self.runs.items():
            keys = {k for run in runs for k, v in run.items() if isinstance(v, (int, float))}
            out[name] = {k: statistics.median(run[k] for run in runs if k in run) for k in sorted(keys)}
        return out

    def ratios(self) -> dict[str, dict[str, float]]:
        medians = self.medians()
        base = medians.get(self.baseline or "", {})
        out = {}
        for name, values in medians.items():
            out[name] = {k: values[k] / base[k] for k in self.metrics if k in values and base.get(k)}
        return out

    def to_dict(self) -> dict:
        return {
            "title": self.title,
            "baseline": self.baseline,
            "metrics": list(self.metrics),
            "runs": self.runs,
            "medians": self.medians(),
            "ratios": self.ratios(),
            "skipped": self.skipped,
        }


def alternate(
    title: str,
    contenders: Sequence[Contender],
    repeats: int,
    warmup: int,
    metrics: Sequence[str],
    shown: Sequence[str] = (),
    log=print,
) -> Comparison:
    """Warm-up runs, then ``repeats`` rounds in which every contender runs once, in turn."""
    comparison = Comparison(title, metrics, shown)
    live = []
    for contender in contenders:
        if contender.baseline:
            comparison.baseline = contender.name
        try:
            for _ in range(warmup):
                contender.run(True)
            live.append(contender)
        except Skipped as why:
            comparison.skipped[contender.name] = str(why)
            log(f"  {contender.name}: skipped ({why})")
    for repeat in range(repeats):
        for contender in live:
            if contender.max_repeats is not None and repeat >= contender.max_repeats:
                continue
            result = contender.run(False)
            result["load_average"] = os.getloadavg()[0]
            comparison.runs.setdefault(contender.name, []).append(result)
            summary = "  ".join(f"{k} {result[k]:.3f}" for k in (*metrics, *shown) if k in result)
            log(f"  [{repeat + 1}/{repeats}] {contender.name}: {summary}")
    return comparison


# --------------------------------------------------------------------------- reporting
def format_table(comparison: Comparison) -> str:
    medians, ratios = comparison.medians(), comparison.ratios()
    header = ["contender"]
    for metric in comparison.metrics:
        header += [metric, "×base"]
    header += list(comparison.shown)
    rows = [header]
    for name in comparison.runs:
        row = [name + (" (baseline)" if name == comparison.baseline else "")]
        for metric in comparison.metrics:
            value = medians[name].get(metric)
            ratio = ratios[name].get(metric)
            row += ["—" if value is None else f"{value:.3f}", "—" if ratio is None else f"{ratio:.2f}×"]
        for key in comparison.shown:
            value = medians[name].get(key)
            row.append("—" if value is None else _fmt(key, value))
        rows.append(row)
    for name, why in comparison.skipped.items():
        rows.append([f"{name}: skipped ({why})"])
    widths = [max(len(r[i]) for r in rows if len(r) > i and len(r) > 1) for i in range(len(header))]
    lines = [f"{comparison.title} — medians of {max((len(v) for v in comparison.runs.values()), default=0)}"]
    for row in rows:
        if len(row) == 1:
            lines.append("  " + row[0])
        else:
            lines.append(
                "  "
                + "  ".join(
                    cell.ljust(w) if i == 0 else cell.rjust(w)
                    for i, (cell, w) in enumerate(zip(row, widths, strict=True))
                )
            )
    return "\n".join(lines)


def _fmt(key: str, value: float) -> str:
    if "acc" in key:
        return f"{value:.4f}"
    if "mib" in key:
        return f"{value:.0f}"
    return (
        f"{value:.3f}" if isinstance(value, float) and not math.isclose(value, round(value)) else f"{value:g}"
    )


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    import torch

    from overfitlab.studies.backends import available_cores

    model = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": model,
        "cores": available_cores(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "load_average": os.getloadavg(),
    }


def write_json(out_dir: Path, name: str, payload: dict) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(payload, indent=1) + "\n")
    return path
