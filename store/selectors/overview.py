"""Headline figures for the top of the dashboard."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.db.models import Sum
from django.db.models.functions import Trunc
from django.utils import timezone

from store.models import Product, ShopRollup, ShopSales, StockMovement
from store.selectors.rollups import category_totals
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
    """A headline figure; the flows and the stock level carry 24 hourly points and
    their change against the same 24 hours a day earlier."""

    key: str
    label: str
    value: int
    money: bool = False
    series: tuple[int, ...] = ()
    change: int | None = None  # None: no history kept for this figure
    tone: str = ""

    @property
    def change_class(self) -> str:
        """Up is green, down is red, no change is grey."""
        if self.change is None or self.change == 0:
            return "text-secondary"
        return "text-success-emphasis" if self.change > 0 else "text-danger-emphasis"


@dataclass(frozen=True)
class Headline:
    figures: list[Figure]


def headline_figures(*, low_stock_threshold: int, now: datetime | None = None) -> Headline:
    """The overview's figures plus trends: paid orders and net revenue per hour from
    the shop rollup, units in stock per hour rebuilt from the last 48 hours of the
    ledger (a range read on its ``created_at`` index). Five queries."""
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
    moves = {
        row["at"]: int(row["d"] or 0)
        for row in StockMovement.objects.filter(created_at__gte=since)
        .annotate(at=Trunc("created_at", "hour", tzinfo=UTC))
        .values("at")
        .annotate(d=Sum("delta"))
        .order_by()
    }
    orders = [sales.get(h, (0, 0))[0] for h in hours]
    revenue = [sales.get(h, (0, 0))[1] for h in hours]
    # Units at the end of each hour: today's level minus what moved after it.
    units, level = [], o.units_in_stock
    for h in reversed(hours):
        units.append(level)
        level -= moves.get(h, 0)
    units.reverse()
    return Headline(
        figures=[
            Figure("products", "Products", o.products),
            Figure(
                "units",
                "Units in stock",
                o.units_in_stock,
                series=tuple(units[24:]),
                change=units[-1] - units[23],
            ),
            Figure("low-stock", "Low stock", o.low_stock, tone="text-warning-emphasis"),
            Figure("out-of-stock", "Out of stock", o.out_of_stock, tone="text-danger"),
            Figure("open-orders", "Open orders", o.open_orders),
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
