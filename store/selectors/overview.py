"""Headline figures for the top of the dashboard."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import Sum
from django.utils import timezone

from store.models import Product, ShopRollup, ShopSales
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
