"""Trending products: net revenue (paid, not cancelled) over a recent window."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from django.db.models import F, Sum
from django.db.models.functions import TruncDay, TruncHour
from django.utils import timezone

from store.models import Product, ProductSales, ProductWindowSales, SalesWindow

# window -> (length, sparkline bucket); a day of hourly points says more than two daily ones.
TRENDING_WINDOWS: dict[str, tuple[timedelta, str]] = {
    "24h": (timedelta(hours=24), "hour"),
    "7d": (timedelta(days=7), "day"),
    "30d": (timedelta(days=30), "day"),
}


@dataclass(frozen=True)
class TrendingProduct:
    product_id: int
    name: str
    shop: str
    revenue: int  # cents
    units: int
    stock: int  # on hand now: a trending product running low needs restocking first
    series: list[int]  # revenue per bucket, oldest first, one value per bucket


@dataclass(frozen=True)
class Trending:
    window: str
    since: datetime
    until: datetime
    bucket: str
    buckets: list[datetime]
    products: list[TrendingProduct]


def _bucket_starts(since: datetime, until: datetime, bucket: str) -> list[datetime]:
    step = timedelta(hours=1) if bucket == "hour" else timedelta(days=1)
    if bucket == "hour":
        start = since.replace(minute=0, second=0, microsecond=0)
    else:
        start = since.replace(hour=0, minute=0, second=0, microsecond=0)
    starts = []
    while start < until:
        starts.append(start)
        start += step
    return starts


def window_start(until: datetime, length: timedelta) -> datetime:
    """Windows are whole hours: "24 h" is the current hour and the 23 before it."""
    return until.replace(minute=0, second=0, microsecond=0) - length + timedelta(hours=1)


def trending(*, window: str, now: datetime | None = None, limit: int = 10) -> Trending:
    """The ``limit`` products with the most net revenue in the window, each with its
    revenue per hour (24 h) or per day (7 d, 30 d). Four small queries: whether the
    rolling window is current, the top products (the first rows of the
    ``windowsales_top`` index when it is; else an aggregate of the window's hourly
    sales, whose cost follows the products sold in the window), their names and
    stock, and their per-bucket series (the top products' hourly rows only).
    Sales paid after ``now`` (never, outside seeded data) count in the window."""
    if window not in TRENDING_WINDOWS:
        raise ValueError(f"unknown trending window {window!r}")
    length, bucket = TRENDING_WINDOWS[window]
    until = now or timezone.now()
    since = window_start(until, length)
    sales = ProductSales.objects.filter(hour__gte=since)
    hours = length // timedelta(hours=1)
    if SalesWindow.objects.filter(window_hours=hours, start=since).exists():
        # The rolling window is current: its top rows are the first of an index.
        top = list(
            ProductWindowSales.objects.filter(window_hours=hours, units__gt=0)
            .order_by("-revenue", "product_id")
            .values("product_id", "revenue", "units")[:limit]
        )
    else:
        # Not advanced to this hour yet: aggregate the window's hourly sales.
        top = list(
            sales.values("product_id")
            .annotate(revenue=Sum("revenue"), units=Sum("units"))
            .filter(units__gt=0)
            .order_by("-revenue", "product_id")[:limit]
        )
    ids = [row["product_id"] for row in top]
    products = (
        {
            p["pk"]: p
            for p in Product.objects.filter(pk__in=ids).values(
                "pk", "name", "stock", shop_name=F("shop__name")
            )
        }
        if ids
        else {}
    )
    starts = _bucket_starts(since, until, bucket)
    index = {start: i for i, start in enumerate(starts)}
    series: dict[int, list[int]] = {pk: [0] * len(starts) for pk in ids}
    trunc = TruncHour if bucket == "hour" else TruncDay
    per_bucket = (
        sales.filter(product_id__in=ids)
        .annotate(at=trunc("hour"))
        .values("product_id", "at")
        .annotate(revenue=Sum("revenue"))
        .order_by()
    )
    for row in per_bucket if ids else ():
        position = index.get(row["at"])
        if position is not None:
            series[row["product_id"]][position] += int(row["revenue"])
    return Trending(
        window=window,
        since=since,
        until=until,
        bucket=bucket,
        buckets=starts,
        products=[
            TrendingProduct(
                product_id=row["product_id"],
                name=products[row["product_id"]]["name"],
                shop=products[row["product_id"]]["shop_name"],
                revenue=int(row["revenue"]),
                units=int(row["units"]),
                stock=products[row["product_id"]]["stock"],
                series=series[row["product_id"]],
            )
            for row in top
        ],
    )


def trending_stock(found: Trending) -> Trending:
    """``found`` with each product's stock as it is now (one query by primary key).

    Stock moves far more often than sales: the dashboard caches ``trending()`` on
    sales and refreshes only this part on every stock move.
    """
    stock = dict(
        Product.objects.filter(pk__in=[p.product_id for p in found.products]).values_list(
            "pk", "stock"
        )
    )
    return replace(
        found,
        products=[replace(p, stock=stock.get(p.product_id, p.stock)) for p in found.products],
    )
