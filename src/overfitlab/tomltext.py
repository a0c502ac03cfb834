"""TOML text: reading a file with one clear line for what is wrong, and writing literals.

Python reads TOML (``tomllib``) but does not write it; the config, a study's spec and the
run index write the few literal kinds they hold (bool, str, int, float, list, inline table).
"""

from __future__ import annotations

import math
import os
import tomllib
from pathlib import Path
from typing import Any

from .errors import OverfitlabError


def read_toml(
    path: str | os.PathLike[str], what: str = "config file", hint: str = "check the path"
) -> dict[str, Any]:
    """A TOML document, or one OverfitlabError line saying what is wrong with the file."""
    path = Path(path)
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise OverfitlabError(f"{what} {path} not found: {hint}") from None
    except (OSError, UnicodeDecodeError) as err:
        raise OverfitlabError(f"cannot read {what} {path}: {err}") from None
    except tomllib.TOMLDecodeError as err:
        raise OverfitlabError(f"{what} {path} is not valid TOML ({err}): fix that line") from None


def toml_value(value: Any) -> str:
    """A Python value as a TOML literal."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        # A TOML basic string: the quote, the backslash and control characters (a path
        # may hold a newline) are escaped, everything else is written as is.
        return (
            '"'
            + "".join(
                f"\\u{ord(c):04x}" if c < " " or c == "\x7f" else "\\" + c if c in '"\\' else c for c in value
            )
            + '"'
        )
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{toml_key(k)} = {toml_value(v)}" for k, v in value.items()) + " }"
    if isinstance(value, float):
        return (
            repr(value)
            if math.isfinite(value)
            else ("nan" if value != value else ("inf" if value > 0 else "-inf"))
        )
    return str(value)


def toml_key(key: str) -> str:
    """A key bare where TOML allows it, else quoted."""
    return key if key.replace("_", "").replace("-", "").isalnum() and key.isascii() else toml_value(key)
