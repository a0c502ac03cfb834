"""The process a run trains in: its cores, device, torch threads, random state and allocator.

A run needs a thread count and a seeded global generator (the weights' initial values
and dropout's masks are drawn from it), both process-wide in torch. ``run_scope`` sets
them for one run and gives the caller's back when it ends, so ``train()`` called from a
script or a notebook leaves that process as it found it. What is tuned once for a whole
process (``keep_freed_memory``) belongs to whoever owns the process: the command line
and a study's worker processes call it, a library call does not.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import platform
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING

from .errors import OverfitlabError

if TYPE_CHECKING:
    import torch

# torch is imported where it is used: the command line's start-up (its parser, `--help`) and
# `backends` read the cores from here without paying for it.


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def resolve_device(name: str) -> torch.device:
    import torch

    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise OverfitlabError("--device cuda asked for, but torch sees no CUDA device: use --device cpu")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise OverfitlabError("--device mps asked for, but MPS is not available: use --device cpu")
    return torch.device(name)


def resolve_threads(threads: int | None) -> int:
    """Never more threads than cores: oversubscribed small CNNs run many times slower."""
    return min(threads, available_cores()) if threads else available_cores()


@contextlib.contextmanager
def run_scope(threads: int | None, device: str = "cpu") -> Iterator[None]:
    """One run's torch threads and global random state, the caller's restored on exit.

    Inside, the run seeds the global generator as it likes (``torch.manual_seed``); on
    exit the CPU generator, and the CUDA one of a CUDA run, are back where they were, and
    so is the thread count, however the run ended.
    """
    import torch

    before = torch.get_num_threads()
    cuda = resolve_device(device).type == "cuda"
    devices = [torch.cuda.current_device()] if cuda else []
    with torch.random.fork_rng(devices=devices):
        torch.set_num_threads(resolve_threads(threads))
        try:
            yield
        finally:
            torch.set_num_threads(before)


# glibc mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


def keep_freed_memory() -> bool:
    """Let glibc keep freed tensor memory for the next step instead of returning it (Linux).

    torch's CPU allocator is plain malloc. By default glibc serves blocks above a
    moving threshold (≥ 128 KiB) with fresh mmaps and trims the heap as soon as
    its free top passes twice that, so every training step and validation batch
    faults its activations' pages in again, zero-filled: 366 000 page faults
    (1.4 GB) per MNIST validation pass. Fixed thresholds keep up to 128 MiB of
    freed memory and serve blocks up to 32 MiB (glibc's maximum) from the heap.
    Process-wide and for the process's life: the command line and study workers call
    it; a script that trains through the Python API may too. Returns whether it applied.
    """
    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(None)
        return bool(libc.mallopt(_M_MMAP_THRESHOLD, 32 << 20) and libc.mallopt(_M_TRIM_THRESHOLD, 128 << 20))
    except (OSError, AttributeError):
        return False
