"""A study's folder and record: one process at a time (its lock), the machine it ran on, its
study.json read back to resume it."""

from __future__ import annotations

import contextlib
import platform
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import store
from ..environment import resolve_device
from ..errors import OverfitlabError
from ..version import __version__
from . import backends
from .index import STUDY_JSON
from .spec import RunPlan, StudySpec

if TYPE_CHECKING:
    pass


@contextlib.contextmanager
def study_lock(study_dir: Path, name: str) -> Iterator[None]:
    """One process per study at a time (a resume while the study still runs would redo its runs)."""
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks; don't run one study twice at once
        yield
        return
    with open(study_dir / ".lock", "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise OverfitlabError(
                f"study {name} is running in another process: wait for it to end, or stop it, before resuming"
            ) from None
        yield  # the lock ends with the file, even when the process is killed


def machine_record(resources: backends.Resources, device: str, versions: Mapping[str, str]) -> dict[str, Any]:
    import numpy
    import torch

    return {
        "overfitlab": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        **versions,
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_cores": resources.cores,
        "device": device,
        "threads": resources.threads,
        "backend": resources.backend,
        "workers": resources.workers,
    }


def device_of(plans: Sequence[RunPlan]) -> str:
    name = next((p.config.device for p in plans if p.config is not None), "auto")
    try:
        return str(resolve_device(name))
    except OverfitlabError:
        return name


def load_resumed(
    study_dir: Path, name: str, spec: StudySpec | None, threads: int | None, stack_seeds: bool
) -> tuple[dict[str, Any], StudySpec]:
    if not (study_dir / STUDY_JSON).is_file():
        known = sorted(p.parent.name for p in study_dir.parent.glob(f"*/{STUDY_JSON}"))
        raise OverfitlabError(
            f"no study {name!r} in {study_dir.parent} to resume: "
            f"known studies are {', '.join(known) or 'none'}"
        )
    document = store.read_json(study_dir / STUDY_JSON)
    stored = StudySpec.from_dict(document["spec"])
    if spec is not None and spec.to_dict() != stored.to_dict():
        raise OverfitlabError(
            f"study {name} was started with another spec: resume it without a "
            "spec, or start a new study with another --name"
        )
    if threads is not None and threads != document["threads"]:
        raise OverfitlabError(
            f"study {name} runs with {document['threads']} threads per run "
            f"(its numbers depend on it): resume without --threads"
        )
    if stack_seeds and not document.get("stack_seeds"):
        raise OverfitlabError(
            f"study {name} trains its seeds one by one (its numbers depend on it): "
            "resume without --stack-seeds"
        )
    return document, stored
