"""The measured runs, one function each; ``benchmarks.worker`` calls them in a fresh process.

Each returns a flat dict: ``train_seconds`` (the training passes),
``valid_seconds`` (the validation passes), ``epoch_seconds`` (both) summed over
epochs, and the accuracies it reports. Times are taken inside the run, so they
leave out interpreter start-up and imports; the harness adds the process's wall
time and peak memory.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any


def _totals(epochs: list[dict]) -> dict[str, float]:
    train = sum(e["train_seconds"] for e in epochs)
    valid = sum(e["valid_seconds"] for e in epochs)
    return {
        "train_seconds": train,
        "valid_seconds": valid,
        "epoch_seconds": train + valid,
        "epochs": len(epochs),
    }


# --------------------------------------------------------------------------- the tutorial
def tutorial_mnist(
    data_root: str,
    epochs: int = 1,
    threads: int | None = None,
    max_batches: int | None = None,
    model: str = "cnn",
    device: str = "auto",
    seed: int = 0,
) -> dict:
    from . import tutorial_loop

    history = tutorial_loop.run_mnist(data_root, epochs, threads, max_batches, model, device, seed)
    last = history[-1]
    return {
        **_totals(history),
        "train_acc": last["train_acc"],
        "valid_acc": last["valid_acc"],
        "valid_loss": last["valid_loss"],
    }


def tutorial_digits_runs(plans: list[dict], threads: int | None = None, device: str = "cpu") -> dict:
    """The tutorial's loop once per planned study run, on the same digits data.

    Each run gets the plan's training subset (same size, seed and label noise),
    the plan's CNN built with ``nn.Dropout`` (the tutorial's layers), and the
    plan's epochs, through the tutorial's DataLoader settings over a dataset
    that converts images one by one with ``ToTensor``. Loss penalties,
    augmentation and early stopping are not applied: the baseline does at most
    as much work as the study.
    """
    import torch

    from overfitlab.config import from_dict
    from overfitlab.data.batches import prepare
    from overfitlab.data.registry import load_dataset
    from overfitlab.runs.build import build_model

    from . import tutorial_loop

    if threads:
        torch.set_num_threads(threads)
    started = time.perf_counter()
    digits = load_dataset("digits")
    seconds, accs = 0.0, []
    for plan in plans:
        config = from_dict(plan["config"]).replace(dropout_impl="torch")
        data = prepare(digits, config.train_size, config.label_noise, config.seed)
        torch.manual_seed(config.seed)
        model = build_model(config, data.image_shape, data.classes).module.to(device)
        loaders = tutorial_loop.array_loaders(
            data.train.images[:, 0].numpy(),
            data.train.labels.numpy(),
            data.valid.images[:, 0].numpy(),
            data.valid.labels.numpy(),
        )
        history = tutorial_loop.train(model, *loaders, config.epochs, torch.device(device))
        seconds += _totals(history)["epoch_seconds"]
        accs.append(max(e["valid_acc"] for e in history))
    return {
        "epoch_seconds": seconds,
        "seconds": time.perf_counter() - started,
        "runs": len(plans),
        "peak_valid_acc_mean": sum(accs) / len(accs),
    }


# --------------------------------------------------------------------------- overfitlab
def overfitlab_api(config: dict[str, Any], save: bool = True) -> dict:
    """``overfitlab.runs.train`` on a Config; with ``save``, into a temporary run folder."""
    from overfitlab.config import Config
    from overfitlab.environment import keep_freed_memory
    from overfitlab.runs.train import train

    keep_freed_memory()  # as `overfitlab train` does for its process
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-run-") as tmp:
        result = train(Config(**config), Path(tmp) / "run" if save else None)
    seconds = time.perf_counter() - started
    history = result.history
    epochs = [
        {"train_seconds": t, "valid_seconds": v}
        for t, v in zip(history.column("train_seconds"), history.column("valid_seconds"), strict=True)
    ]
    return {
        **_totals(epochs),
        "train_acc": history[-1]["train_acc"],
        "valid_acc": history[-1]["valid_acc"],
        "valid_loss": history[-1]["valid_loss"],
        "call_seconds": seconds,
    }


def overfitlab_study(
    preset: str,
    seeds: int,
    backend: str,
    workers: int | None = None,
    threads: int | None = None,
    base: dict | None = None,
    stack_seeds: bool = False,
) -> dict:
    """A built-in study through ``overfitlab.studies.run_study``, in a temporary runs folder."""
    from overfitlab import studies as study
    from overfitlab.environment import keep_freed_memory

    keep_freed_memory()  # as `overfitlab study` does for its process (a serial study trains in it)
    spec = study.preset(preset, seeds)
    if base:
        spec = spec.with_base(base)
    with tempfile.TemporaryDirectory(prefix="bench-study-") as tmp:
        started = time.perf_counter()
        result = study.run_study(
            spec,
            tmp,
            "bench",
            backend=backend,
            workers=workers,
            threads=threads,
            report=False,
            stack_seeds=stack_seeds,
        )
        seconds = time.perf_counter() - started
    if result.failed:
        raise RuntimeError(f"{len(result.failed)} runs failed: {result.failed[0]['error']}")
    per_run = {
        r["run_id"].split("/", 1)[1]: [r["lowest_valid_loss"], r["peak_valid_acc"], r["epochs_run"]]
        for r in result.runs
    }
    accs = [acc for _, acc, _ in per_run.values()]
    return {
        "seconds": seconds,
        "wall_seconds": result.wall_seconds,
        "runs": len(result.runs),
        "peak_valid_acc_mean": sum(accs) / len(accs),
        "per_run": per_run,
    }


def plans(preset: str, seeds: int, base: dict | None = None, threads: int | None = None) -> dict:
    """The study's planned runs (configs as dicts), for the tutorial side of the comparison."""
    from overfitlab import studies as study
    from overfitlab.studies.spec import expand

    spec = study.preset(preset, seeds)
    if base:
        spec = spec.with_base(base)
    return {"plans": [p.to_dict() for p in expand(spec, threads=threads)]}


# --------------------------------------------------------------------------- other frameworks
def _optional_recipe(module: str, *args) -> dict:
    """``benchmarks.<module>.run(*args)``, or why it is skipped when its framework is missing."""
    import importlib

    try:
        recipe = importlib.import_module(f".{module}", __package__)
    except ImportError as err:
        return {"skipped": f"{err.name} is not installed: pip install 'overfitlab[bench]'"}
    return recipe.run(*args)


def lightning_mnist(
    data_root: str,
    epochs: int = 1,
    threads: int | None = None,
    max_batches: int | None = None,
    device: str = "cpu",
    seed: int = 0,
) -> dict:
    return _optional_recipe("lightning_recipe", data_root, epochs, threads, max_batches, device, seed)


def keras_mnist(
    data_root: str,
    epochs: int = 1,
    threads: int | None = None,
    max_batches: int | None = None,
    device: str = "cpu",
    seed: int = 0,
) -> dict:
    return _optional_recipe("keras_recipe", data_root, epochs, threads, max_batches, device, seed)
