"""Shared fixtures: one torch thread, the real data sets when present, the command line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

# ../shared/data from the project's root: official MNIST and Fashion-MNIST bytes, read-only.
SHARED_DATA = Path(__file__).parents[1].parent / "shared" / "data"
MNIST_RAW = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


@pytest.fixture(autouse=True, scope="session")
def private_cache(tmp_path_factory):
    """Decoded image folders are cached in a temporary folder, never in the user's ~/.cache."""
    before = os.environ.get("OVERFITLAB_CACHE_DIR")
    os.environ["OVERFITLAB_CACHE_DIR"] = str(tmp_path_factory.mktemp("cache"))
    yield
    if before is None:
        os.environ.pop("OVERFITLAB_CACHE_DIR", None)
    else:
        os.environ["OVERFITLAB_CACHE_DIR"] = before


def write_image_folder(root: Path, splits: dict, class_names=None) -> Path:
    """PNG files ``root/<split>/<class>/<index>.png`` from uint8 Splits (an empty split name
    writes ``root/<class>/...``); names zero-padded, so sorted order is the split's order."""
    from PIL import Image

    for split_name, split in splits.items():
        for i in range(len(split)):
            label = int(split.labels[i])
            folder = root / split_name / (class_names[label] if class_names else f"c{label}")
            folder.mkdir(parents=True, exist_ok=True)
            pixels = split.images[i].numpy()
            image = pixels[0] if pixels.shape[0] == 1 else pixels.transpose(1, 2, 0)
            Image.fromarray(image).save(folder / f"{i:05d}.png")
    return root


@pytest.fixture(autouse=True, scope="session")
def one_thread():
    """Small CNNs on a shared CPU: more threads than cores makes them many times slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The folder that holds MNIST/raw and FashionMNIST/raw; skips when it is absent."""
    if not all((SHARED_DATA / "MNIST" / "raw" / name).is_file() for name in MNIST_RAW):
        pytest.skip(f"real MNIST not found under {SHARED_DATA} (../shared/data from the repo root)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def digits():
    """The built-in digits data set (sklearn's 8×8 digits, fixed split)."""
    from overfitlab.data.registry import load_dataset

    return load_dataset("digits")


def cli_env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env.pop("OVERFITLAB_DATA_DIR", None)
    return env


def cli_command(*args: str) -> list[str]:
    """``python -m overfitlab ARGS`` with this interpreter (the project's virtual environment)."""
    return [sys.executable, "-m", "overfitlab", *map(str, args)]


def run_overfitlab(cwd: Path, *args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    """Run the command in ``cwd`` with one thread; stdout and stderr captured as text."""
    return subprocess.run(
        cli_command(*args), cwd=cwd, env=cli_env(), capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture
def run_cli(tmp_path):
    """``run_cli(*args)`` runs ``python -m overfitlab ARGS`` in tmp_path; returns the CompletedProcess."""

    def run(*args: str, timeout: float = 180, cwd: Path | None = None) -> subprocess.CompletedProcess:
        return run_overfitlab(cwd or tmp_path, *args, timeout=timeout)

    return run
