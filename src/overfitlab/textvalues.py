"""Option values written as text: an image size, a list of classes, a model's keyword argument.

Each parser gives one OverfitlabError line that shows a value written the right way.
"""

from __future__ import annotations

import tomllib
from typing import Any

from .errors import OverfitlabError


def parse_image_size(text: str) -> tuple[int, int]:
    """``H`` or ``H,W`` → (H, W)."""
    try:
        sides = tuple(int(part) for part in text.replace("x", ",").split(","))
    except ValueError:
        sides = ()
    if len(sides) == 1:
        sides = (sides[0], sides[0])
    if len(sides) != 2 or min(sides) < 1:
        raise OverfitlabError(f"bad image_size {text!r}: give H or H,W in pixels, such as 32 or 28,28")
    return sides[0], sides[1]


def parse_classes(text: str) -> tuple[int, ...]:
    """``0-4`` or ``5,7,9`` (or ``0-2,7``) → the class numbers, in the order given."""
    numbers: list[int] = []
    try:
        for part in text.replace(" ", "").split(","):
            low, dash, high = part.partition("-")
            numbers += range(int(low), int(high) + 1) if dash else [int(low)]
    except ValueError:
        numbers = []
    if not numbers or len(set(numbers)) != len(numbers) or min(numbers) < 0:
        raise OverfitlabError(f"bad classes {text!r}: give class numbers such as 0-4 or 5,7,9, each once")
    return tuple(numbers)


def parse_model_arg(text: str) -> tuple[str, Any]:
    """``KEY=VALUE`` with VALUE a TOML literal (``3``, ``0.5``, ``true``, ``[1, 2]``, ``"a"``);
    a bare word that is no literal is taken as a string (``act=relu``)."""
    key, sep, value = text.partition("=")
    key = key.strip().replace("-", "_")
    if not sep or not key.isidentifier():
        raise OverfitlabError(f"bad --model-arg {text!r}: write KEY=VALUE, such as width=32 or act=relu")
    try:
        parsed = tomllib.loads(f"v = {value.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        if not value.strip() or any(c in value for c in "[]{}\"'"):
            raise OverfitlabError(
                f'bad --model-arg {text!r}: the value must be a TOML literal (3, 0.5, true, "text", [1, 2])'
            ) from None
        parsed = value.strip()
    return key, parsed
