"""Headline figures for the top of the dashboard."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db.models import Count, Q, Sum
from django.utils import timezone

from store.models import Order, Product


@dataclass(frozen=True)
class Overview:
    products: int
    low_stock: int
    out_of_stock: int
    units_in_stock: int
    open_orders: int
    paid_orders_24h: int


def store_overview(*, low_stock_threshold: int, now: datetime | None = None) -> Overview:
    """Two aggregate queries, whatever the size of the store."""
    now = now or timezone.now()
    products = Product.objects.aggregate(
        total=Count("pk"),
        low=Count("pk", filter=Q(stock__lte=low_stock_threshold)),
        out=Count("pk", filter=Q(stock=0)),
        units=Sum("stock", default=0),
    )
    orders = Order.objects.aggregate(
        open=Count("pk", filter=Q(paid=False, cancelled_at__isnull=True)),
        paid_24h=Count("pk", filter=Q(paid=True, paid_at__gte=now - timedelta(hours=24))),
    )
    return Overview(
        products=products["total"],
        low_stock=products["low"],
        out_of_stock=products["out"],
        units_in_stock=products["units"],
        open_orders=orders["open"],
        paid_orders_24h=orders["paid_24h"],
    )
