"""Your model, your data: the image-folder path and a user's own CNN, against their baselines.

    .venv/bin/python -m benchmarks.your_data [--data-dir ../shared/data] [--workdir DIR] [--quick]

1. Fashion-MNIST from ``--data-dir`` written as a 70,000-PNG folder (outside the repository,
   in ``--workdir``, default a temporary folder): the first decode (cold cache), then the
   time to the first batch of a run that starts from the cache, each in a fresh process
   (ratio: decode / cached; the target is ≥ 20×).
2. One epoch of the tutorial's CNN from the folder against the built-in ``fashion-mnist``
   path (the same bytes): epoch time (ratio folder / built-in; the target is within 5 %).
3. A local study with 2 workers on the folder: the decoded images' memory, summed over the
   processes that map the cache file, as resident size (each process's pages) and as
   proportional set size (shared pages divided among their sharers): one copy is PSS ≈ the
   file's size, where RSS counts it once per worker.
4. A user's own small CNN (defined here, given as ``benchmarks/your_data.py:small_cnn``) on
   Fashion-MNIST, 1 epoch, 2 threads: ``overfitlab train`` against the same model in the
   tutorial's loop (DataLoader over ``ToTensor`` images, batch 32, Adam 0.01, drop_last).

Every timed run is a fresh process (``--worker NAME``); the ratios are printed at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
THREADS = 2


def small_cnn(in_shape: tuple[int, int, int], num_classes: int) -> Any:
    """A user's model, not overfitlab's: two conv layers, global pooling, a linear head."""
    from torch import nn

    channels = in_shape[0]
    return nn.Sequential(
        nn.Conv2d(channels, 16, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(32 * (in_shape[1] // 4) * (in_shape[2] // 4), num_classes),
    )


# --------------------------------------------------------------------------- workers (fresh processes)
def worker_write_folder(data_dir: str, folder: str, limit: int) -> dict[str, Any]:
    from PIL import Image

    from overfitlab.data.registry import load_dataset

    data = load_dataset("fashion-mnist", data_dir, download=False)
    started = time.perf_counter()
    for split_name, split in (("train", data.train), ("valid", data.valid)):
        count = min(len(split), limit)
        for i in range(count):
            target = Path(folder) / split_name / str(int(split.labels[i])) / f"{i:05d}.png"
            target.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(split.images[i, 0].numpy()).save(target)
    return {"seconds": time.perf_counter() - started}


def worker_first_batch(folder: str) -> dict[str, Any]:
    """Loading the folder (decoding it, or mapping the cache) and the first training batch."""
    import torch

    from overfitlab.data.batches import Scaling, train_batches
    from overfitlab.data.registry import load_dataset

    started = time.perf_counter()
    data = load_dataset(f"folder:{folder}")
    images, _ = next(train_batches(data.train, 32, torch.Generator().manual_seed(0)))
    Scaling()(images)
    return {"seconds": time.perf_counter() - started, "images": len(data.train) + len(data.valid)}


def worker_epoch(dataset: str, data_dir: str | None, model: str) -> dict[str, Any]:
    from overfitlab.config import Config
    from overfitlab.environment import keep_freed_memory
    from overfitlab.runs.train import train

    keep_freed_memory()  # as `overfitlab train` does for its process
    config = Config(
        dataset=dataset, data_dir=data_dir, model=model, epochs=1, threads=THREADS, download=False
    )
    result = train(config)
    record = result.history[-1]
    return {
        "train_seconds": record["train_seconds"],
        "epoch_seconds": record["epoch_seconds"],
        "valid_acc": record["valid_acc"],
    }


def worker_tutorial_loop(data_dir: str) -> dict[str, Any]:
    """The tutorial's way: torchvision's data set with ToTensor, a DataLoader, Adam 0.01."""
    import torch
    import torchvision
    from torch import nn
    from torch.utils.data import DataLoader

    torch.set_num_threads(THREADS)
    torch.manual_seed(0)
    to_tensor = torchvision.transforms.ToTensor()
    train = torchvision.datasets.FashionMNIST(data_dir, train=True, transform=to_tensor, download=False)
    valid = torchvision.datasets.FashionMNIST(data_dir, train=False, transform=to_tensor, download=False)
    loader = DataLoader(train, batch_size=32, shuffle=True, drop_last=True)
    model = small_cnn((1, 28, 28), 10)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    loss_fn = nn.CrossEntropyLoss()
    started = time.perf_counter()
    model.train()
    for x, y in loader:
        optimizer.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        optimizer.step()
    train_seconds = time.perf_counter() - started
    model.eval()
    correct = 0
    with torch.no_grad():
        for x, y in DataLoader(valid, batch_size=1000):
            correct += int((model(x).argmax(1) == y).sum())
    return {"train_seconds": train_seconds, "valid_acc": correct / len(valid)}


WORKERS = {
    "write_folder": worker_write_folder,
    "first_batch": worker_first_batch,
    "epoch": worker_epoch,
    "tutorial_loop": worker_tutorial_loop,
}


def fresh(name: str, *args: Any, env: dict[str, str]) -> dict[str, Any]:
    command = [sys.executable, "-m", "benchmarks.your_data", "--worker", name, json.dumps(args)]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"worker {name} failed:\n{done.stderr}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


# --------------------------------------------------------------------------- shared memory of a study
def mapped_memory(path_part: str) -> tuple[int, int, int]:
    """(processes, summed Rss, summed Pss) in bytes of every mapping of a file whose path
    contains ``path_part``, over all processes (/proc/PID/smaps)."""
    processes, rss, pss = 0, 0, 0
    for smaps in Path("/proc").glob("[0-9]*/smaps"):
        try:
            text = smaps.read_text()
        except OSError:
            continue
        inside, seen = False, False
        for line in text.splitlines():
            if "-" in line.split(" ", 1)[0] and len(line.split()) >= 5:  # a mapping's header line
                inside = path_part in line
                seen = seen or inside
            elif inside and line.startswith("Rss:"):
                rss += int(line.split()[1]) * 1024
            elif inside and line.startswith("Pss:"):
                pss += int(line.split()[1]) * 1024
        processes += seen
    return processes, rss, pss


def study_memory(
    folder: str, cache: Path, env: dict[str, str], runs: Path, train_size: int
) -> dict[str, Any]:
    """Peak mapped Rss and Pss of the cache file while a 2-worker local study trains."""
    peak = {"processes": 0, "rss": 0, "pss": 0}
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            processes, rss, pss = mapped_memory(str(cache))
            if rss > peak["rss"]:
                peak.update(processes=processes, rss=rss, pss=pss)
            time.sleep(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    spec = runs / "spec.toml"
    spec.write_text(
        f'seeds = 1\n[base]\ndataset = "folder:{folder}"\nepochs = 2\ntrain_size = {train_size}\n'
        '[[variant]]\nname = "a"\n[[variant]]\nname = "b"\nl2 = 0.0001\n'
    )
    command = [sys.executable, "-m", "overfitlab", "study", str(spec), "--backend", "local", "--workers", "2"]
    subprocess.run(
        [*command, "--runs-dir", str(runs), "--quiet"], cwd=ROOT, env=env, check=True, capture_output=True
    )
    stop.set()
    sampler.join()
    return {**peak, "file_bytes": cache.stat().st_size}


# --------------------------------------------------------------------------- the suite
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data"))
    parser.add_argument(
        "--workdir", help="where the PNG folder and the cache go (default: a temporary folder)"
    )
    parser.add_argument(
        "--quick", action="store_true", help="7,000 images instead of 70,000 (code paths only)"
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("args", nargs="?", help=argparse.SUPPRESS)
    options = parser.parse_args(argv)
    if options.worker:
        print(json.dumps(WORKERS[options.worker](*json.loads(options.args))))
        return 0
    if not (Path(options.data_dir) / "FashionMNIST" / "raw").is_dir():
        raise SystemExit(f"Fashion-MNIST not found under {options.data_dir}: pass --data-dir")
    work = Path(options.workdir or tempfile.mkdtemp(prefix="overfitlab-bench-"))
    folder, cache, runs = work / "fashion-png", work / "cache", work / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OVERFITLAB_CACHE_DIR": str(cache), "OMP_NUM_THREADS": str(THREADS)}
    limit = 6000 if options.quick else 60000
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; workdir {work}")
    if not folder.is_dir():
        wrote = fresh("write_folder", options.data_dir, str(folder), limit, env=env)
        print(f"wrote {folder}: {wrote['seconds']:.1f} s")
    for stale in cache.glob("*"):
        stale.unlink()
    decode = fresh("first_batch", str(folder), env=env)
    cached = min(fresh("first_batch", str(folder), env=env)["seconds"] for _ in range(3))
    print(
        f"1. first batch: decoding {decode['images']:,} PNGs {decode['seconds']:.2f} s, from the cache "
        f"{cached:.3f} s: {decode['seconds'] / cached:.1f}x faster (target >= 20x)"
    )
    folder_epochs, builtin_epochs = [], []
    for _ in range(3):  # alternating, medians
        folder_epochs.append(fresh("epoch", f"folder:{folder}", None, "seed-cnn", env=env))
        builtin_epochs.append(fresh("epoch", "fashion-mnist", options.data_dir, "seed-cnn", env=env))

    def median(values: list[float]) -> float:
        return sorted(values)[len(values) // 2]

    folder_epoch = median([r["epoch_seconds"] for r in folder_epochs])
    builtin_epoch = median([r["epoch_seconds"] for r in builtin_epochs])
    note = " (--quick: the folder holds a tenth of the images)" if options.quick else ""
    print(
        f"2. seed-cnn epoch: folder {folder_epoch:.2f} s, built-in fashion-mnist {builtin_epoch:.2f} s: "
        f"ratio {folder_epoch / builtin_epoch:.3f} (target within 5 %){note}"
    )
    memory = study_memory(str(folder), next(cache.glob("*.npy")), env, runs, limit // 3)
    mib = 2**20
    print(
        f"3. local study, 2 workers: the cache file ({memory['file_bytes'] / mib:.1f} MiB) mapped by "
        f"{memory['processes']} processes: RSS {memory['rss'] / mib:.1f} MiB summed, PSS "
        f"{memory['pss'] / mib:.1f} MiB summed ({memory['pss'] / memory['file_bytes']:.2f} copies)"
    )
    ours, theirs = [], []
    for _ in range(3):
        theirs.append(fresh("tutorial_loop", options.data_dir, env=env))
        ours.append(
            fresh("epoch", "fashion-mnist", options.data_dir, "benchmarks/your_data.py:small_cnn", env=env)
        )
    our_train = median([r["train_seconds"] for r in ours])
    their_train = median([r["train_seconds"] for r in theirs])
    print(
        f"4. a user's CNN, 1 epoch, {THREADS} threads: overfitlab {our_train:.2f} s (valid acc "
        f"{median([r['valid_acc'] for r in ours]):.3f}), tutorial loop {their_train:.2f} s (valid acc "
        f"{median([r['valid_acc'] for r in theirs]):.3f}): {our_train / their_train:.2f}x (target <= 0.7x)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
