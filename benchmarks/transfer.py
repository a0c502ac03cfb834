"""Transfer against training from scratch, measured with overfitlab's own commands, offline.

    python -m benchmarks.transfer --data-root ../shared/data           # Fashion-MNIST 0-4 → 5-9
    python -m benchmarks.transfer --data-root ../shared/data --images 60
    python -m benchmarks.transfer --data-root ../shared/data --mnist --max-seeds 20  # MNIST 0-4 → 60 of 5-9
    python -m benchmarks.transfer --digits                             # the 8×8 digits 0-4 → 5-9

Each case pretrains the remedies preset's CNN (seed-cnn, 16 channels, no batch norm or
dropout, Adam 0.01, batch 32) on every training image of classes 0-4 with ``overfitlab train
--classes 0-4``, then runs one study on a few hundred images of classes 5-9, which the
pretraining never saw: the weights fine-tuned whole (``baseline``: ``--init``, the head drawn
anew: ``--reinit-head``), the same model
from random weights (``scratch``), the head alone (``freeze``), the head first for 2 epochs
(``head-first``) and the body at a tenth of the rate (``discriminative``). The study decides
each against the baseline on the returned models' held-out accuracy, in stages of seeds (the
default ``auto``), Holm-adjusted. Printed: the commands, the study's table and answers, and the
wall time of each step.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RECIPE = {"model": "seed-cnn", "hidden": 16, "batchnorm": False, "dropout": 0.0, "head": "fc"}
CASES = {
    # data set, data flags, pretraining epochs, fine-tuning images and epochs
    "fashion-mnist": ("fashion-mnist", 5, 300, 30),
    "mnist": ("mnist", 5, 60, 30),
    "digits": ("digits", 30, 60, 60),
}


def flags(values: dict) -> list[str]:
    out = []
    for key, value in values.items():
        flag = "--" + key.replace("_", "-")
        out += [flag if value else "--no-" + flag[2:]] if isinstance(value, bool) else [flag, str(value)]
    return out


def toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return f'"{value}"' if isinstance(value, str) else str(value)


def run(command: list[str]) -> float:
    print("$ " + " ".join(command), flush=True)
    started = time.perf_counter()
    if subprocess.run(command).returncode != 0:
        sys.exit(f"{command[3]} failed: see its output above")
    return time.perf_counter() - started


def case(
    name: str, data_root: str | None, folder: Path, images: int | None = None, max_seeds: int = 10
) -> None:
    dataset, pre_epochs, default_images, epochs = CASES[name]
    images = images or default_images
    data = {"dataset": dataset, **({"data_dir": data_root, "download": False} if data_root else {})}
    overfitlab = [sys.executable, "-m", "overfitlab"]
    pre = folder / "runs" / f"{name}-0-4"
    pretraining = run(
        [*overfitlab, "train", *flags({**data, **RECIPE, "classes": "0-4", "epochs": pre_epochs})]
        + ["--runs-dir", str(pre.parent), "--name", pre.name, "--quiet"]
    )
    base = {**data, **RECIPE, "classes": "5-9", "train_size": images, "epochs": epochs}
    # Classes 5-9 are other things than 0-4: the head learnt for 0-4 is drawn anew.
    start = {"init": str(pre), "reinit_head": True}
    variants = {
        "baseline": start,
        "scratch": {},
        "freeze": {**start, "freeze": True},
        "head-first": {**start, "freeze_epochs": 2},
        "discriminative": {**start, "body_lr_ratio": 0.1},
    }
    spec = folder / f"{name}.toml"
    lines = [f'name = "transfer-{name}"', "[base]", *(f"{k} = {toml(v)}" for k, v in base.items())]
    for variant, overrides in variants.items():
        lines += ["[[variant]]", f'name = "{variant}"', *(f"{k} = {toml(v)}" for k, v in overrides.items())]
    spec.write_text("\n".join(lines) + "\n")
    print(spec.read_text())
    study = run(
        [
            *overfitlab,
            "study",
            str(spec),
            "--seeds",
            "auto",
            "--max-seeds",
            str(max_seeds),
            "--runs-dir",
            str(folder / "runs"),
            "--quiet",
        ]
    )
    print(f"{name}: pretraining {pretraining:.0f} s, study {study:.0f} s", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data-root", help="the folder with FashionMNIST/raw (../shared/data)")
    parser.add_argument("--digits", action="store_true", help="the built-in digits instead")
    parser.add_argument(
        "--mnist", action="store_true", help="MNIST's digits 0-4 → 5-9 instead of Fashion-MNIST"
    )
    parser.add_argument(
        "--images", type=int, help="fine-tuning images of classes 5-9 (default 300; digits 60)"
    )
    parser.add_argument("--max-seeds", type=int, default=10, help="the study's most seeds (default 10)")
    parser.add_argument("--keep", help="a folder to keep the runs in (default: a temporary one)")
    args = parser.parse_args()
    if not args.digits and not args.data_root:
        parser.error("pass --data-root ../shared/data (Fashion-MNIST), or --digits")
    with tempfile.TemporaryDirectory() as temporary:
        folder = Path(args.keep or temporary)
        folder.mkdir(parents=True, exist_ok=True)
        name = "digits" if args.digits else "mnist" if args.mnist else "fashion-mnist"
        case(name, args.data_root, folder, args.images, args.max_seeds)


if __name__ == "__main__":
    main()
