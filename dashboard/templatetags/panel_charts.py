"""Server-rendered charts (inline SVG, no chart JS) and small panel helpers."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from django import template

from store.money import format_money

if TYPE_CHECKING:
    from dashboard.panel_runs import PanelRun

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
        "top": top,
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
def panel_url(run: PanelRun, **changes: Any) -> str:
    """The panel's URL with some of its parameters changed (e.g. a sort link)."""
    return run.url_with(**changes)


@register.filter
def change_text(figure: Any) -> str:
    """A headline figure's change against the same window a day earlier: "+3", "-1.50"."""
    change = figure.change
    if change is None:
        return ""
    sign = "+" if change > 0 else ("-" if change < 0 else "±")
    shown = format_money(abs(change)) if figure.money else f"{abs(change):,}"
    return f"{sign}{shown}"


@register.filter
def series_text(figure: Any) -> str:
    """A headline figure's hourly values as text, money in cents: "1.00, 2.50"."""
    return ", ".join(cents(v) if figure.money else str(v) for v in figure.series)


# --- Time series: server-rendered SVG with axes, hover values and a data table ---

PALETTE = ("#0d6efd", "#198754", "#dc3545", "#fd7e14", "#6f42c1", "#20c997")


@dataclass(frozen=True)
class Series:
    name: str
    values: Sequence[float | None]
    color: str
    points: str = ""  # polyline points (line charts)
    dots: tuple[tuple[float, float], ...] = ()  # each sampled point (line charts)
    bars: tuple[tuple[float, float, float, float], ...] = ()  # x, y, width, height


@dataclass(frozen=True)
class Chart:
    title: str
    kind: str
    width: int
    height: int
    left: int
    top: int
    right: int
    bottom: int
    y_ticks: list[tuple[float, str]]
    x_ticks: list[tuple[float, str]]
    series: list[Series]
    columns: list[tuple[float, float, str]]  # hover targets: x, width, <title>
    rows: list[tuple[str, list[str]]]  # the text alternative: label, formatted values
    summary: str


def _format(value: float | None, unit: str) -> str:
    if value is None:
        return "no sample"
    if unit == "money":
        return format_money(round(value))
    if unit == "ms":
        return f"{value:,.1f} ms"
    if unit == "s":
        return f"{value:,.1f} s"
    return f"{value:,.0f}"


def _nice_top(value: float) -> float:
    """The y axis' top: the largest value rounded up to 1, 2 or 5 x 10^n."""
    if value <= 0:
        return 1
    magnitude = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 5, 10):
        if value <= step * magnitude:
            return step * magnitude
    return 10 * magnitude  # pragma: no cover


def chart(
    *,
    title: str,
    labels: Sequence[str],
    series: Sequence[tuple[str, Sequence[float | None]]],
    unit: str = "",
    kind: str = "line",
    width: int = 640,
    height: int = 160,
) -> Chart:
    left, top, right, bottom = 56, 8, width - 8, height - 22
    n = max(len(labels), 1)
    plot_w, plot_h = right - left, bottom - top
    peak = max((v for _, values in series for v in values if v is not None), default=0)
    y_top = _nice_top(peak)

    def y(value: float) -> float:
        return round(bottom - plot_h * value / y_top, 1)

    slot = plot_w / n
    drawn = []
    for i, (name, values) in enumerate(series):
        color = PALETTE[i % len(PALETTE)]
        if kind == "bars":
            bar_w = max(slot * 0.8 / len(series), 0.5)
            bars = tuple(
                (
                    round(left + slot * j + slot * 0.1 + bar_w * i, 1),
                    y(v),
                    round(bar_w, 1),
                    round(bottom - y(v), 1),
                )
                for j, v in enumerate(values)
                if v
            )
            drawn.append(Series(name, values, color, bars=bars))
        else:
            dots = tuple(
                (round(left + slot * (j + 0.5), 1), y(v))
                for j, v in enumerate(values)
                if v is not None
            )
            points = " ".join(f"{x},{y_}" for x, y_ in dots)
            drawn.append(Series(name, values, color, points=points, dots=dots))
    every = max(1, math.ceil(n / 6))
    x_ticks = [(round(left + slot * (j + 0.5), 1), label) for j, label in enumerate(labels)][
        ::every
    ]
    y_ticks = [(y(y_top * f), _format(y_top * f, unit)) for f in (0, 0.5, 1)]
    rows = [
        (label, [_format(values[j], unit) for _, values in series])
        for j, label in enumerate(labels)
    ]
    columns = [
        (
            round(left + slot * j, 1),
            round(slot, 1),
            f"{label}: " + "; ".join(f"{name} {cells[k]}" for k, (name, _) in enumerate(series)),
        )
        for j, (label, cells) in enumerate(rows)
    ]
    totals = []
    for name, values in series:
        seen = [v for v in values if v is not None]
        totals.append(f"{name}: highest {_format(max(seen), unit)}" if seen else f"{name}: no data")
    return Chart(
        title=title,
        kind=kind,
        width=width,
        height=height,
        left=left,
        top=top,
        right=right,
        bottom=bottom,
        y_ticks=y_ticks,
        x_ticks=x_ticks,
        series=drawn,
        columns=columns,
        rows=rows,
        summary=f"{title}, {len(labels)} points. " + "; ".join(totals) + ".",
    )


def _when(at: datetime, bucket: str) -> str:
    return at.strftime("%m-%d" if bucket == "day" else "%H:%M")


@register.simple_tag
def sales_charts(s: Any) -> list[Chart]:
    """Orders (bars) and net revenue (line) per bucket of a SalesSeries."""
    labels = [_when(p.at, s.range.bucket) for p in s.points]
    per = f"per {s.range.bucket}"
    return [
        chart(
            title=f"Paid orders {per}",
            labels=labels,
            series=[("orders", [p.orders for p in s.points])],
            kind="bars",
        ),
        chart(
            title=f"Net revenue {per}",
            labels=labels,
            series=[("revenue", [p.revenue for p in s.points])],
            unit="money",
        ),
    ]


@register.simple_tag
def stock_chart(s: Any) -> Chart:
    labels = [_when(p.at, s.range.bucket) for p in s.points]
    return chart(
        title=f"Units in and out per {s.range.bucket}",
        labels=labels,
        series=[
            ("in", [p.units_in for p in s.points]),
            ("out", [p.units_out for p in s.points]),
        ],
        kind="bars",
    )


@register.simple_tag
def ops_charts(o: Any) -> list[Chart]:
    labels = [m.strftime("%H:%M") for m in o.minutes]
    charts = [
        chart(
            title="Outbox backlog (pending events)",
            labels=labels,
            series=[("backlog", o.backlog)],
            height=120,
        ),
        chart(
            title="Database latency",
            labels=labels,
            series=list(o.latency.items()),
            unit="ms",
            height=140,
        ),
    ]
    if o.lag:
        charts.append(
            chart(title="Replica lag", labels=labels, series=list(o.lag.items()), unit="s")
        )
    return charts
