"""A study report's cells and pictures: each number with its text, its exact value and
its sort key, as the page's tables show them."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .. import stats
from ..stats import Comparison, GroupKey, Summary
from ..viz.html import png_base64
from .report_data import (
    DIGITS,
)


def exact(value: float | int | None) -> str:
    """Full precision for data-* attributes: repr round-trips a float exactly."""
    if value is None:
        return "nan"
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else "nan"
    return str(value)


def data_attributes(**attributes: Any) -> dict[str, str]:
    """{"run-metric": "..."}: the data-* attributes of an element, None left out."""
    return {k.replace("_", "-"): str(v) for k, v in attributes.items() if v is not None}


def digits_of(metric: str) -> int:
    return DIGITS.get(metric, 3)


@dataclass(frozen=True)
class Cell:
    """A table cell: its text, an interval and a p-value below it, its exact values as data-*."""

    text: str
    attrs: dict[str, str] = field(default_factory=dict)
    interval: str = ""
    p: str = ""


def summary_cell(metric: str, variant: str, grid_value: Any, summary: Summary) -> Cell:
    digits = digits_of(metric)
    attrs = data_attributes(
        run_metric=metric,
        variant=variant,
        grid_value=grid_value,
        n=summary.n,
        value=exact(summary.mean),
        std=exact(summary.std),
        low=exact(summary.low),
        high=exact(summary.high),
    )
    if summary.n == 0:
        return Cell("–", attrs)
    spread = f" ± {stats.fmt(summary.std, digits)}" if summary.n > 1 else ""
    interval = (
        f"[{stats.fmt(summary.low, digits)}, {stats.fmt(summary.high, digits)}]"
        if math.isfinite(summary.low)
        else ""
    )
    return Cell(f"{stats.fmt(summary.mean, digits)}{spread}", attrs, interval)


def comparison_cell(c: Comparison, with_p: bool = True) -> Cell:
    attrs = data_attributes(
        compare_metric=c.metric,
        variant=c.variant,
        baseline=c.baseline,
        n=c.n,
        value=exact(c.mean_diff),
        low=exact(c.low),
        high=exact(c.high),
        p=exact(c.p_value) if c.p_value is not None else "undefined",
    )
    if c.n == 0:
        return Cell("–", attrs)

    def sign(v: float) -> str:
        return ("+" if v > 0 else "") + stats.fmt(v)

    interval = f"[{sign(c.low)}, {sign(c.high)}]" if c.interval_defined else ""
    return Cell(sign(c.mean_diff), attrs, interval, f"p {stats.format_p(c.p_value)}" if with_p else "")


@dataclass(frozen=True)
class Picture:
    png: str  # base64
    alt: str
    caption: str


def picture(png: bytes, alt: str, caption: str) -> Picture:
    return Picture(png_base64(png), alt, caption)


def group_label(key: GroupKey, grid_field: str | None) -> str:
    variant, value = key
    return variant if value is None else f"{variant} · {grid_field}={value}"


def value_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "none"
    return str(value)


def sortable(value: Any) -> tuple[int, Any, str]:
    return (0, value, "") if isinstance(value, (int, float)) else (1, 0, str(value))


def ordered_keys(summaries: Mapping[GroupKey, Any], order: Sequence[str]) -> list[GroupKey]:
    return sorted(
        summaries, key=lambda k: (order.index(k[0]) if k[0] in order else len(order), sortable(k[1]))
    )
