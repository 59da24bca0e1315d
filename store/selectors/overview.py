"""Headline figures for the top of the dashboard."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, cast

from django.conf import settings
from django.db.models import Sum
from django.utils import timezone

from store.models import STORE_HOUR_COLUMNS, Product, ShopRollup, ShopSales, StoreHour
from store.selectors.rollups import as_utc_hour, category_totals, store_hour_tail
from store.selectors.trending import window_start


@dataclass(frozen=True)
class Overview:
    products: int
    low_stock: int
    out_of_stock: int
    units_in_stock: int
    open_orders: int
    paid_orders_24h: int


def store_overview(*, low_stock_threshold: int, now: datetime | None = None) -> Overview:
    """Three small aggregates over the rollups, whatever the size of the store.

    The catalog figures are ``category_totals`` (the stock ledger's tail included).

    "Paid in 24 h" counts net paid orders (cancelled ones leave) in the current hour
    and the 23 before it, like the trending window. A threshold other than the
    configured one counts low stock through the partial index instead.
    """
    now = now or timezone.now()
    products = {"total": 0, "low": 0, "out": 0, "units": 0}
    for row in category_totals().values():
        products["total"] += row["products"]
        products["low"] += row["low_stock"]
        products["out"] += row["out_of_stock"]
        products["units"] += row["stock_sum"]
    if low_stock_threshold != settings.STOREOPS_LOW_STOCK_THRESHOLD:
        products["low"] = Product.objects.low_stock(low_stock_threshold).count()
    open_orders = ShopRollup.objects.aggregate(n=Sum("open_orders", default=0))["n"]
    paid = ShopSales.objects.filter(hour__gte=window_start(now, timedelta(hours=24))).aggregate(
        n=Sum("orders", default=0)
    )["n"]
    return Overview(
        products=int(products["total"]),
        low_stock=int(products["low"]),
        out_of_stock=int(products["out"]),
        units_in_stock=int(products["units"]),
        open_orders=int(open_orders),
        paid_orders_24h=int(paid),
    )


@dataclass(frozen=True)
class Figure:
    """A headline figure with 24 hourly points (the value at the end of each hour,
    the current one last) and its change against the same 24 hours a day earlier
    (for a level: now minus 24 h ago; for a flow: this 24 h minus the 24 h before)."""

    key: str
    label: str
    value: int
    money: bool = False
    series: tuple[int, ...] = ()
    change: int | None = None  # None: no history kept for this figure
    tone: str = ""
    higher_is_worse: bool = False  # a rise is bad news (more products out of stock)

    @property
    def change_class(self) -> str:
        """Good news is green, bad news red, no change grey: up is good unless
        ``higher_is_worse``."""
        if self.change is None or self.change == 0:
            return "text-secondary"
        good = (self.change > 0) != self.higher_is_worse
        return "text-success-emphasis" if good else "text-danger-emphasis"


@dataclass(frozen=True)
class Headline:
    figures: list[Figure]


def _level(figure: Figure, moved: list[int]) -> Figure:
    """The level at the end of each of 48 hours, walked back from today's value by
    what moved after it; the figure keeps the last 24 and the change over 24 h."""
    values, level = [], figure.value
    for change in reversed(moved):
        values.append(level)
        level -= change
    values.reverse()
    return replace(figure, series=tuple(values[24:]), change=values[-1] - values[23])


def _store_hours(since: datetime) -> dict[datetime, list[int]]:
    """StoreHour's rows from ``since`` plus the unfolded ledger, summed per hour.

    One statement (rollup UNION ALL tail) for one snapshot, as ``category_totals``.
    """
    sums = {column: Sum(column) for column in STORE_HOUR_COLUMNS}
    stored = StoreHour.objects.filter(hour__gte=since).values("hour").annotate(**sums).order_by()
    tail = store_hour_tail(per_slot=False, since=since)
    moved: dict[datetime, list[int]] = {}
    for row in cast(Iterable[dict[str, Any]], stored.union(tail, all=True)):
        hour = moved.setdefault(as_utc_hour(row["hour"]), [0] * len(STORE_HOUR_COLUMNS))
        for n, column in enumerate(STORE_HOUR_COLUMNS):
            hour[n] += int(row[column] or 0)
    return moved


def headline_figures(*, low_stock_threshold: int, now: datetime | None = None) -> Headline:
    """The overview's figures, each with its last 24 hours, read from the last 48
    hours of two hourly rollups only (a range of the hour index; cost bounded by
    the range, whatever the size of the store):

    - paid orders and net revenue per hour: ShopSales;
    - products, units in stock, low and out of stock, open orders: walked back from
      today's levels by StoreHour, each level's change per hour (plus the unfolded
      ledger's). A low-stock threshold other than the configured one has no
      history: that figure shows no trend.

    Five queries: the overview's three, sales, store hours.
    """
    now = now or timezone.now()
    o = store_overview(low_stock_threshold=low_stock_threshold, now=now)
    since = window_start(now, timedelta(hours=48))
    hours = [since + timedelta(hours=i) for i in range(48)]
    sales = {
        row["hour"]: (int(row["n"] or 0), int(row["r"] or 0))
        for row in ShopSales.objects.filter(hour__gte=since)
        .values("hour")
        .annotate(n=Sum("orders"), r=Sum("revenue"))
        .order_by()
    }
    orders = [sales.get(h, (0, 0))[0] for h in hours]
    revenue = [sales.get(h, (0, 0))[1] for h in hours]
    moved = _store_hours(since)
    nothing = [0] * len(STORE_HOUR_COLUMNS)

    def level(figure: Figure, column: str) -> Figure:
        n = STORE_HOUR_COLUMNS.index(column)
        return _level(figure, [moved.get(h, nothing)[n] for h in hours])

    low = Figure(
        "low-stock", "Low stock", o.low_stock, tone="text-warning-emphasis", higher_is_worse=True
    )
    if low_stock_threshold == settings.STOREOPS_LOW_STOCK_THRESHOLD:
        low = level(low, "low_stock")
    out = Figure(
        "out-of-stock", "Out of stock", o.out_of_stock, tone="text-danger", higher_is_worse=True
    )
    return Headline(
        figures=[
            level(Figure("products", "Products", o.products), "products"),
            level(Figure("units", "Units in stock", o.units_in_stock), "units"),
            low,
            level(out, "out_of_stock"),
            level(Figure("open-orders", "Open orders", o.open_orders), "open_orders"),
            Figure(
                "paid-24h",
                "Paid in 24 h",
                o.paid_orders_24h,
                series=tuple(orders[24:]),
                change=sum(orders[24:]) - sum(orders[:24]),
                tone="text-success",
            ),
            Figure(
                "revenue-24h",
                "Net revenue 24 h",
                sum(revenue[24:]),
                money=True,
                series=tuple(revenue[24:]),
                change=sum(revenue[24:]) - sum(revenue[:24]),
            ),
        ]
    )
