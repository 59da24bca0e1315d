"""Trending products: revenue from paid orders over a recent window."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db.models import F, Sum
from django.db.models.functions import TruncDay, TruncHour
from django.utils import timezone

from store.models import OrderItem

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


def trending(*, window: str, now: datetime | None = None, limit: int = 10) -> Trending:
    """The ``limit`` products with the most paid revenue in the window, each with
    its revenue per hour (24 h) or per day (7 d, 30 d). Two queries."""
    if window not in TRENDING_WINDOWS:
        raise ValueError(f"unknown trending window {window!r}")
    length, bucket = TRENDING_WINDOWS[window]
    until = now or timezone.now()
    since = until - length
    paid = OrderItem.objects.filter(
        order__paid=True, order__paid_at__gte=since, order__paid_at__lt=until
    )
    revenue = Sum(F("quantity") * F("unit_price"))
    top = list(
        paid.values("product_id")
        .annotate(
            revenue=revenue,
            units=Sum("quantity"),
            name=F("product__name"),
            shop=F("product__shop__name"),
            stock=F("product__stock"),
        )
        .order_by("-revenue", "product_id")[:limit]
    )
    starts = _bucket_starts(since, until, bucket)
    index = {start: i for i, start in enumerate(starts)}
    series: dict[int, list[int]] = {row["product_id"]: [0] * len(starts) for row in top}
    trunc = TruncHour if bucket == "hour" else TruncDay
    per_bucket = (
        paid.filter(product_id__in=list(series))
        .annotate(at=trunc("order__paid_at"))
        .values("product_id", "at")
        .annotate(revenue=revenue)
        .order_by()
    )
    for row in per_bucket if series else ():
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
                name=row["name"],
                shop=row["shop"],
                revenue=int(row["revenue"]),
                units=int(row["units"]),
                stock=row["stock"],
                series=series[row["product_id"]],
            )
            for row in top
        ],
    )
