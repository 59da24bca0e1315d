"""Time series for the dashboard: sales from the shop rollup, stock moves from the ledger.

A series' cost is bounded by its time range, never by the store's history: sales
read ``ShopSales`` (shops x hours x slots, through its ``hour`` index) and stock
moves read the ledger rows of the range through the ``created_at`` index.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from django.db.models import Count, Q, Sum
from django.db.models.functions import Trunc
from django.utils import timezone

from store.models import Shop, ShopSales, StockMovement
from store.selectors.trending import window_start

RANGES: dict[str, timedelta] = {
    "24h": timedelta(hours=24),
    "7d": timedelta(days=7),
    "30d": timedelta(days=30),
}
CUSTOM_MAX_DAYS = 90
# Ranges longer than this are drawn per day: 72 hourly points is about what fits.
HOURLY_UP_TO = timedelta(days=3)


@dataclass(frozen=True)
class TimeRange:
    """Whole hours from ``start`` (included) to ``end`` (excluded), UTC."""

    start: datetime
    end: datetime
    label: str

    @property
    def bucket(self) -> str:
        return "hour" if self.end - self.start <= HOURLY_UP_TO else "day"

    @property
    def step(self) -> timedelta:
        return timedelta(hours=1) if self.bucket == "hour" else timedelta(days=1)

    def floor(self, at: datetime) -> datetime:
        at = at.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
        return at if self.bucket == "hour" else at.replace(hour=0)

    def buckets(self) -> list[datetime]:
        found, at = [], self.floor(self.start)
        while at < self.end:
            found.append(at)
            at += self.step
        return found


def time_range(
    *, name: str, first: date | None = None, last: date | None = None, now: datetime | None = None
) -> TimeRange:
    """The page's time range: the last 24 h / 7 d / 30 d in whole hours (this hour
    and the ones before it, like the trending windows), or whole UTC days from
    ``first`` to ``last`` (both included) for ``custom``."""
    now = now or timezone.now()
    next_hour = now.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    if name == "custom" and first is not None and last is not None:
        start = datetime.combine(first, time(), UTC)
        end = min(datetime.combine(last, time(), UTC) + timedelta(days=1), next_hour)
        return TimeRange(start=start, end=max(end, start), label=f"{first} to {last}")
    length = RANGES.get(name, RANGES["24h"])
    label = {"24h": "the last 24 h", "7d": "the last 7 days", "30d": "the last 30 days"}
    return TimeRange(
        start=window_start(now, length), end=next_hour, label=label.get(name, label["24h"])
    )


@dataclass(frozen=True)
class SalesPoint:
    at: datetime
    orders: int
    revenue: int


@dataclass(frozen=True)
class SalesSeries:
    range: TimeRange
    shop_id: int | None
    shop_name: str
    points: list[SalesPoint]

    @property
    def orders(self) -> int:
        return sum(p.orders for p in self.points)

    @property
    def revenue(self) -> int:
        return sum(p.revenue for p in self.points)


def sales_series(*, span: TimeRange, shop_id: int | None = None) -> SalesSeries:
    """Net paid orders and net revenue per hour (per day past 3 days) of the range,
    for one shop or all: one aggregate over the rollup's rows of the range (grouped
    by hour, so at most 24 x 90 rows come back), summed into days here."""
    rows = ShopSales.objects.filter(hour__gte=span.start, hour__lt=span.end)
    shop_name = "all shops"
    if shop_id:
        rows = rows.filter(shop_id=shop_id)
        shop_name = Shop.objects.filter(pk=shop_id).values_list("name", flat=True).first() or (
            f"shop {shop_id} (not found)"
        )
    totals = {b: [0, 0] for b in span.buckets()}
    for row in rows.values("hour").annotate(n=Sum("orders"), r=Sum("revenue")).order_by():
        cell = totals.setdefault(span.floor(row["hour"]), [0, 0])
        cell[0] += int(row["n"] or 0)
        cell[1] += int(row["r"] or 0)
    return SalesSeries(
        range=span,
        shop_id=shop_id or None,
        shop_name=shop_name,
        points=[SalesPoint(at, n, r) for at, (n, r) in sorted(totals.items())],
    )


@dataclass(frozen=True)
class StockPoint:
    at: datetime
    units_in: int
    units_out: int  # a positive number: units that left
    moves: int


@dataclass(frozen=True)
class StockSeries:
    range: TimeRange
    points: list[StockPoint]

    @property
    def units_in(self) -> int:
        return sum(p.units_in for p in self.points)

    @property
    def units_out(self) -> int:
        return sum(p.units_out for p in self.points)


def stock_series(*, span: TimeRange) -> StockSeries:
    """Units into and out of stock per hour (per day past 3 days): one aggregate over
    the ledger rows of the range, found through the ``created_at`` index."""
    rows = (
        StockMovement.objects.filter(created_at__gte=span.start, created_at__lt=span.end)
        .annotate(at=Trunc("created_at", span.bucket, tzinfo=UTC))
        .values("at")
        .annotate(
            units_in=Sum("delta", filter=Q(delta__gt=0), default=0),
            units_out=Sum("delta", filter=Q(delta__lt=0), default=0),
            moves=Count("pk"),
        )
        .order_by()
    )
    totals = {b: (0, 0, 0) for b in span.buckets()}
    for row in rows:
        totals[span.floor(row["at"])] = (
            int(row["units_in"]),
            -int(row["units_out"]),
            int(row["moves"]),
        )
    return StockSeries(
        range=span, points=[StockPoint(at, *values) for at, values in sorted(totals.items())]
    )
