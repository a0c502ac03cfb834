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

import contextlib
import io
import json
import os
import re
import shlex
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
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


def _umask() -> int:
    """The process's umask. Linux shows it in /proc; elsewhere it can only be read by setting
    it and setting it back, a moment in which another thread's new file gets 022."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


# Letters and digits of any script, then also '.', '_' and '-': a name is one folder, never a
# path, an option (a leading '-') or hidden (a leading '.').
_NAME = re.compile(r"^[^\W_][\w.-]*$")


def atomic_write(path: str | os.PathLike[str], data: bytes | str) -> None:
    path = Path(path)
    payload = data.encode("utf-8") if isinstance(data, str) else data
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as err:  # a missing, read-only or full folder: one line, not a traceback
        raise OverfitlabError(f"cannot write {path}: {err.strerror or err}") from None
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; a report is meant to be shared
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as err:
        Path(tmp).unlink(missing_ok=True)
        raise OverfitlabError(f"cannot write {path}: {err.strerror or err}") from None
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


def check_name(name: str, what: str = "run") -> str:
    if not _NAME.match(name):
        raise OverfitlabError(
            f"bad {what} name {name!r}: start with a letter or digit (of any script), then use "
            "letters, digits, '.', '_' and '-' only (no spaces, slashes or other signs)"
        )
    return name


def _highest_missing(path: Path) -> Path | None:
    """The outermost folder of ``path`` that does not exist yet (None when it exists):
    what creating ``path`` would create first."""
    top = None
    while not path.exists() and path != path.parent:
        top, path = path, path.parent
    return top


def check_writable(path: str | os.PathLike[str], what: str, flag: str) -> Path:
    """Fail in one line, before any work, if ``path`` cannot become a folder we write in:
    it (or a parent) is a file, or the nearest existing folder is not writable."""
    path = Path(path)
    missing = _highest_missing(path.absolute())
    existing = missing.parent if missing is not None else path.absolute()
    if not existing.is_dir():
        where = "" if existing == path.absolute() else f" ({existing} is a file)"
        raise OverfitlabError(f"{what} {path} is a file, not a folder{where}: pass another {flag}")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise OverfitlabError(
            f"{what} {path} is not writable ({existing} is read-only for this user): pass a "
            f"{flag} you can write to"
        )
    return path


def ensure_folder(path: str | os.PathLike[str], what: str, flag: str) -> Path:
    """``path`` as a folder (made with its parents), or one line saying why it cannot be."""
    path = check_writable(path, what, flag)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OverfitlabError(f"cannot create {what} {path}: {err.strerror}: pass another {flag}") from None
    return path


@contextlib.contextmanager
def removed_on_failure(
    path: str | os.PathLike[str], keep: Callable[[], bool] = lambda: False
) -> Iterator[None]:
    """Folders this block creates at or above ``path`` are removed again if it fails (an
    exception, Ctrl-C), unless ``keep()`` says what was written is worth keeping (a run
    that finished an epoch can be resumed). A failed command leaves no new folder behind."""
    top = _highest_missing(Path(path).absolute())
    try:
        yield
    except BaseException:
        if top is not None and top.exists() and not keep():
            shutil.rmtree(top, ignore_errors=True)
        raise


def generated_name(prefix: str = "run") -> str:
    return f"{prefix}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid() % 10000:04d}"


def new_run_dir(runs_dir: str | os.PathLike[str], name: str | None) -> Path:
    """The path of a new run folder runs_dir/name, checked but not created (the run creates it
    once its data and model are built): an existing non-empty folder is an error, never
    overwritten."""
    name = check_name(name) if name else generated_name()
    check_writable(runs_dir, "runs folder", "--runs-dir")
    path = Path(runs_dir) / name
    if path.is_file():
        raise OverfitlabError(f"{path} is a file, not a run folder: pass another --name")
    if path.is_dir() and any(path.iterdir()):
        raise OverfitlabError(
            f"run folder {path} already exists: pass another --name, or "
            f"--resume {shlex.quote(str(path))} to continue it"
        )
    return path


def read_json(path: str | os.PathLike[str]) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise OverfitlabError(f"{path} not found: is this a run folder?") from None
    except (OSError, ValueError) as err:
        raise OverfitlabError(f"{path} is unreadable or corrupt ({err})") from None
