"""The small HTML pieces every result's notebook display is built from: text, tables, images, boxes."""

from __future__ import annotations

import base64
import html
from collections.abc import Iterable
from typing import Any

# A notebook display redraws at most this often: a redraw costs ~50 ms of PNG.
REDRAW_SECONDS = 1.0


def png_base64(png: bytes) -> str:
    """PNG bytes as the base64 text of a ``data:image/png;base64,`` URI (every page's pictures)."""
    return base64.b64encode(png).decode("ascii")


def text(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def table(rows: Iterable[tuple[str, Any]]) -> str:
    body = "".join(
        f"<tr><th style='text-align:left;padding-right:1em'>{html.escape(label)}</th>"
        f"<td style='text-align:right'>{html.escape(text(value))}</td></tr>"
        for label, value in rows
    )
    return f"<table>{body}</table>"


def image(png: bytes, alt: str, width: int = 520) -> str:
    data = png_base64(png)
    style = "max-width:100%"
    return (
        f"<img alt='{html.escape(alt)}' width='{width}' style='{style}' src='data:image/png;base64,{data}'>"
    )


def box(title: str, *parts: str) -> str:
    return (
        "<div class='overfitlab' style='display:flex;flex-wrap:wrap;gap:1em;align-items:flex-start'>"
        f"<div><strong>{html.escape(title)}</strong>{parts[0]}</div>"
        + "".join(f"<div>{part}</div>" for part in parts[1:])
        + "</div>"
    )
