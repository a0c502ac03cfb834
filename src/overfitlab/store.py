"""Run folders: every file written atomically, checkpoints that resume and rebuild.

A run folder ``runs/<name>/`` holds::

    config.toml    the resolved config
    history.csv    one row per epoch        history.json   epochs and batches
    best.pt        the best epoch's model   last.pt        the last epoch: model,
                                                           optimizer, RNG states, callbacks
    summary.json   the final summary        summary.txt    the same, for people
    curves.png     loss and accuracy, train vs valid, best and stop epochs marked

Writes go to a temporary file in the same folder, then ``os.replace``: a reader
(or a crash, or Ctrl-C) sees the old file or the new one, never half of one.
"""

from __future__ import annotations

import io
import json
import os
import re
import tempfile
import time
from pathlib import Path
from typing import Any

from .errors import OverfitlabError

CONFIG = "config.toml"
HISTORY_CSV = "history.csv"
HISTORY_JSON = "history.json"
BEST = "best.pt"
LAST = "last.pt"
SUMMARY_JSON = "summary.json"
SUMMARY_TXT = "summary.txt"
CURVES = "curves.png"

_UMASK = os.umask(0o022)
os.umask(_UMASK)  # read once: umask can only be read by setting it
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def atomic_write(path: str | os.PathLike[str], data: bytes | str) -> None:
    path = Path(path)
    payload = data.encode("utf-8") if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; a report is meant to be shared
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_torch_save(obj: Any, path: str | os.PathLike[str]) -> None:
    import torch  # here, not at the top: the command line starts without torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write(path, buffer.getvalue())


def write_json(path: str | os.PathLike[str], obj: Any) -> None:
    atomic_write(path, json.dumps(obj, indent=1, allow_nan=False) + "\n")


def check_name(name: str) -> str:
    if not _NAME.match(name):
        raise OverfitlabError(
            f"bad run name {name!r}: use letters, digits, '.', '_' and '-' (no spaces or slashes)"
        )
    return name


def generated_name(prefix: str = "run") -> str:
    return f"{prefix}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid() % 10000:04d}"


def new_run_dir(runs_dir: str | os.PathLike[str], name: str | None) -> Path:
    """Create runs_dir/name; an existing non-empty folder is an error, never overwritten."""
    name = check_name(name) if name else generated_name()
    path = Path(runs_dir) / name
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.mkdir(exist_ok=True)
    except OSError as err:
        raise OverfitlabError(f"cannot create run folder {path}: {err.strerror}") from None
    if any(path.iterdir()):
        raise OverfitlabError(
            f"run folder {path} already exists: pass another --name, or --resume {path} to continue it"
        )
    return path


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    import torch

    path = Path(path)
    if not path.is_file():
        raise OverfitlabError(f"checkpoint {path} not found: check the path")
    try:
        # Our checkpoints hold tensors, plain Python values and RNG byte tensors only.
        checkpoint: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=True)
        return checkpoint
    except Exception as err:  # torch raises many types for a damaged zip
        raise OverfitlabError(
            f"checkpoint {path} is corrupt or not an overfitlab checkpoint ({err})"
        ) from None


def read_json(path: str | os.PathLike[str]) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise OverfitlabError(f"{path} not found: is this a run folder?") from None
    except (OSError, ValueError) as err:
        raise OverfitlabError(f"{path} is unreadable or corrupt ({err})") from None
