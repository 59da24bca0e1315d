"""Server-rendered charts (inline SVG, no chart JS) and small panel helpers."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from django import template
from django.urls import reverse

from store.money import format_money

register = template.Library()

BAR_HEIGHT = 14
BAR_GAP = 4


@register.filter
def cents(value: int | float | None) -> str:
    """12345 -> "123.45"; averages are rounded to whole cents first."""
    if value is None:
        return "-"
    return format_money(round(value))


@dataclass(frozen=True)
class Bar:
    label: str
    value: int
    y: int
    width: float


@register.simple_tag
def bars(rows: Sequence[Any], attr: str, label: str, width: int = 200) -> dict[str, Any]:
    """Geometry of a horizontal bar chart: one bar per row, scaled to the largest."""
    values = [getattr(row, attr) or 0 for row in rows]
    top = max(values, default=0) or 1
    step = BAR_HEIGHT + BAR_GAP
    return {
        "height": max(step * len(values), step),
        "width": width,
        "bars": [
            Bar(getattr(row, label), value, i * step, round(width * value / top, 1))
            for i, (row, value) in enumerate(zip(rows, values, strict=True))
        ],
    }


@register.simple_tag
def sparkline(series: Sequence[int], width: int = 120, height: int = 24) -> str:
    """The ``points`` of an SVG polyline drawing ``series`` left to right."""
    if not series:
        return ""
    top = max(series) or 1
    step = width / max(len(series) - 1, 1)
    return " ".join(
        f"{i * step:.1f},{height - 1 - (height - 2) * value / top:.1f}"
        for i, value in enumerate(series)
    )


@register.simple_tag
def panel_url(run: Any, **changes: Any) -> str:
    """The panel's URL with some of its parameters changed (e.g. a sort link)."""
    params = {**run.params, **changes}
    query = urlencode([(f"{run.name}-{k}", v) for k, v in params.items()])
    return f"{reverse('dashboard-panel', args=[run.name])}?{query}"
