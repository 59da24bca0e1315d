"""Headline figures for the top of the dashboard."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from django.conf import settings
from django.db.models import Count, Q, QuerySet, Sum
from django.db.models.functions import Coalesce, Trunc
from django.utils import timezone

from store.models import Order, Product, ShopRollup, ShopSales, StockMovement
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
    note: str = ""  # the card's title text: what the figure does not see

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


def _per_hour(rows: Iterable[dict[str, Any]], *names: str) -> dict[datetime, tuple[int, ...]]:
    return {row["at"]: tuple(int(row[name] or 0) for name in names) for row in rows}


def _walk_back(
    now_value: int, hours: list[datetime], change: Callable[[datetime], int]
) -> list[int]:
    """The value at the end of each hour: today's value minus what changed after it."""
    values, level = [], now_value
    for h in reversed(hours):
        values.append(level)
        level -= change(h)
    values.reverse()
    return values


def _level(figure: Figure, values: list[int]) -> Figure:
    return replace(figure, series=tuple(values[24:]), change=values[-1] - values[23])


def headline_figures(*, low_stock_threshold: int, now: datetime | None = None) -> Headline:
    """The overview's figures plus 24 hourly points each, read from the last 48 hours
    only (every read below is a range on an index, its cost bounded by the range):

    - paid orders and net revenue per hour: the shop rollup (``shopsales_hour``);
    - units in stock, low stock and out of stock: walked back from today's figures
      with the ledger's per-hour sums (``created_at`` index): units by ``delta``, low
      by ``(after <= T) - (before <= T)``, out by ``(after = 0) - (before = 0)``; plus
      the products created per hour (``product_created``), whose first stock is
      ``initial_stock`` (creating a product writes no ledger row);
    - products: walked back with the products created per hour. A deleted product
      leaves no record (``product_delete`` writes no event), so a product deleted in
      the window is missing from the hours before its deletion: only products that
      never sold nor moved stock can be deleted;
    - open orders (as ``store_overview`` counts them: not paid, not cancelled):
      walked back with the orders placed per hour (``created_at`` index) and the
      orders that left the open state per hour, at ``coalesce(paid_at,
      cancelled_at)`` (the ``order_left_open`` index): paid, or cancelled unpaid.

    Every stock change but a product's creation writes a ledger row (adjustments,
    optimistic sets, orders and their cancellation; the seed loads stock as
    ``initial_stock`` with an empty ledger). Eight queries (nine at a threshold other
    than the configured one): the overview's, sales, ledger, products created,
    orders placed, orders that left.
    """
    now = now or timezone.now()
    t = low_stock_threshold
    o = store_overview(low_stock_threshold=t, now=now)
    since = window_start(now, timedelta(hours=48))
    hours = [since + timedelta(hours=i) for i in range(48)]

    def hourly(qs: QuerySet[Any], field: str = "created_at") -> QuerySet[Any]:
        return qs.annotate(at=Trunc(field, "hour", tzinfo=UTC)).values("at").order_by()

    sales = {
        row["hour"]: (int(row["n"] or 0), int(row["r"] or 0))
        for row in ShopSales.objects.filter(hour__gte=since)
        .values("hour")
        .annotate(n=Sum("orders"), r=Sum("revenue"))
        .order_by()
    }
    moves = _per_hour(
        hourly(StockMovement.objects.filter(created_at__gte=since)).annotate(
            d=Sum("delta"),
            low_in=Count("pk", filter=Q(stock_after__lte=t)),
            low_out=Count("pk", filter=Q(stock_before__lte=t)),
            out_in=Count("pk", filter=Q(stock_after=0)),
            out_out=Count("pk", filter=Q(stock_before=0)),
        ),
        *("d", "low_in", "low_out", "out_in", "out_out"),
    )
    created = _per_hour(
        hourly(Product.objects.filter(created_at__gte=since)).annotate(
            n=Count("pk"),
            units=Sum("initial_stock"),
            low=Count("pk", filter=Q(initial_stock__lte=t)),
            out=Count("pk", filter=Q(initial_stock=0)),
        ),
        *("n", "units", "low", "out"),
    )
    placed = _per_hour(
        hourly(Order.objects.filter(created_at__gte=since)).annotate(n=Count("pk")), "n"
    )
    left = _per_hour(
        hourly(
            Order.objects.annotate(left_at=Coalesce("paid_at", "cancelled_at")).filter(
                left_at__gte=since
            ),
            "left_at",
        ).annotate(n=Count("pk")),
        "n",
    )
    none5, none4 = (0, 0, 0, 0, 0), (0, 0, 0, 0)
    orders = [sales.get(h, (0, 0))[0] for h in hours]
    revenue = [sales.get(h, (0, 0))[1] for h in hours]
    units = _walk_back(
        o.units_in_stock, hours, lambda h: moves.get(h, none5)[0] + created.get(h, none4)[1]
    )
    low = _walk_back(
        o.low_stock,
        hours,
        lambda h: moves.get(h, none5)[1] - moves.get(h, none5)[2] + created.get(h, none4)[2],
    )
    out = _walk_back(
        o.out_of_stock,
        hours,
        lambda h: moves.get(h, none5)[3] - moves.get(h, none5)[4] + created.get(h, none4)[3],
    )
    products = _walk_back(o.products, hours, lambda h: created.get(h, none4)[0])
    open_orders = _walk_back(
        o.open_orders, hours, lambda h: placed.get(h, (0,))[0] - left.get(h, (0,))[0]
    )
    return Headline(
        figures=[
            _level(
                Figure(
                    "products",
                    "Products",
                    o.products,
                    note="Earlier hours count products created since, not ones deleted "
                    "since (a deletion leaves no record).",
                ),
                products,
            ),
            _level(Figure("units", "Units in stock", o.units_in_stock), units),
            _level(
                Figure(
                    "low-stock",
                    "Low stock",
                    o.low_stock,
                    tone="text-warning-emphasis",
                    higher_is_worse=True,
                ),
                low,
            ),
            _level(
                Figure(
                    "out-of-stock",
                    "Out of stock",
                    o.out_of_stock,
                    tone="text-danger",
                    higher_is_worse=True,
                ),
                out,
            ),
            _level(Figure("open-orders", "Open orders", o.open_orders), open_orders),
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
