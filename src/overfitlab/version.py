"""The installed version of overfitlab, read once from the package's metadata."""

from __future__ import annotations

import importlib.metadata as _metadata

try:  # one source of the version: pyproject.toml, as installed
    __version__ = _metadata.version("overfitlab")
except _metadata.PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "0+unknown"
