"""Contenders shared by the benchmarks: the tutorial, overfitlab's API, CLI and studies, other frameworks."""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

from .harness import Contender, run_process, run_worker, worker_env
from .options import Options


def _process_fields(result) -> dict:
    return {"wall_seconds": result.wall_seconds, "max_rss_mib": result.max_rss_mib}


def tutorial(opts: Options, threads: int, model: str = "cnn", baseline: bool = True) -> Contender:
    def run(warm: bool) -> dict:
        kwargs = {
            "data_root": str(opts.data_root),
            "epochs": 1,
            "threads": threads,
            "model": model,
            "max_batches": opts.warmup_batches if warm else opts.max_batches,
            "device": opts.device,
        }
        result = run_worker("tutorial_mnist", kwargs, threads, timeout=opts.timeout)
        return {**result.output, **_process_fields(result)}

    return Contender("tutorial loop", run, baseline=baseline)


def mnist_config(opts: Options, threads: int, model: str, **extra) -> dict:
    config = {
        "dataset": "mnist",
        "data_dir": str(opts.data_root),
        "download": False,
        "model": model,
        "epochs": 1,
        "threads": threads,
        "device": opts.device,
        "max_batches": opts.max_batches,
        **extra,
    }
    return {k: v for k, v in config.items() if v is not None}


def overfitlab_api(opts: Options, threads: int, config: dict) -> Contender:
    def run(warm: bool) -> dict:
        cfg = {**config, "max_batches": opts.warmup_batches} if warm else config
        result = run_worker("overfitlab_api", {"config": cfg}, threads, timeout=opts.timeout)
        return {**result.output, **_process_fields(result)}

    return Contender("overfitlab API", run)


def _flags(config: dict) -> list[str]:
    flags = []
    for key, value in config.items():
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            flags.append(flag if value else "--no-" + key.replace("_", "-"))
        else:
            flags += [flag, str(value)]
    return flags


def overfitlab_cli(opts: Options, threads: int, config: dict) -> Contender:
    """``overfitlab train --json`` in a subprocess: its own train_seconds, the wall time around it."""

    def run(warm: bool) -> dict:
        cfg = {**config, "max_batches": opts.warmup_batches} if warm else config
        with tempfile.TemporaryDirectory(prefix="bench-cli-") as tmp:
            argv = [
                sys.executable,
                "-m",
                "overfitlab",
                "train",
                *_flags(cfg),
                "--json",
                "--quiet",
                "--runs-dir",
                tmp,
                "--name",
                "bench",
            ]
            stdout, wall, rss = run_process(argv, env=worker_env(threads), timeout=opts.timeout)
            summary = json.loads(stdout.strip().splitlines()[-1])
            epochs = json.loads((Path(tmp) / "bench" / "history.json").read_text())["epochs"]
        train = sum(e["train_seconds"] for e in epochs)
        valid = sum(e["valid_seconds"] for e in epochs)
        return {
            "train_seconds": train,
            "valid_seconds": valid,
            "epoch_seconds": train + valid,
            "summary_train_seconds": summary["train_seconds"],
            "valid_acc": summary["last"]["valid_acc"],
            "wall_seconds": wall,
            "max_rss_mib": rss,
        }

    return Contender("overfitlab CLI", run)


def remedies_study(
    opts: Options, name: str, threads: int, base: dict | None = None, baseline: bool = False, **options
) -> Contender:
    """``run_study`` on the ``remedies`` preset in a fresh process, ``opts.study_seeds`` seeds
    (warm-up: one seed, one epoch); ``options`` go to ``run_study`` (backend, workers, ...)."""

    def run(warm: bool) -> dict:
        kwargs = {
            "preset": "remedies",
            "seeds": 1 if warm else opts.study_seeds,
            "threads": threads,
            "base": {**(base or {}), "epochs": 1} if warm else base,
            **options,
        }
        result = run_worker("overfitlab_study", kwargs, threads, timeout=opts.timeout)
        return {**result.output, "wall_seconds": result.wall_seconds}

    return Contender(name, run, baseline=baseline)


# Lightning and Keras are reference points, not targets: two repeats at most keep the
# suite near 15 minutes when they are installed.
FRAMEWORK_REPEATS = 2


def framework(opts: Options, threads: int, name: str, function: str) -> Contender:
    def run(warm: bool) -> dict:
        kwargs = {
            "data_root": str(opts.data_root),
            "epochs": 1,
            "threads": threads,
            "max_batches": opts.warmup_batches if warm else opts.max_batches,
            "device": opts.device,
        }
        result = run_worker(function, kwargs, threads, timeout=opts.timeout)
        return {**result.output, **_process_fields(result)}

    return Contender(name, run, max_repeats=FRAMEWORK_REPEATS)
