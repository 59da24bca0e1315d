"""The panels' queries as they were before rollups: full scans of the base tables.

Kept as the reference the rollup-backed selectors must agree with (same definitions:
net revenue leaves cancelled orders out; time windows are whole hours).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.db.models import (
    Avg,
    Count,
    Exists,
    F,
    IntegerField,
    Max,
    Min,
    OuterRef,
    Q,
    Subquery,
    Sum,
    Window,
)
from django.db.models.functions import Coalesce

from store.models import Category, Order, OrderItem, Product, Shop
from store.selectors.rankings import RANK_FUNCTIONS
from store.selectors.trending import TRENDING_WINDOWS, window_start

NET_ITEMS = Q(order__paid=True, order__cancelled_at__isnull=True)


def category_stats(low: int) -> dict[str, tuple[Any, ...]]:
    rows = Category.objects.annotate(
        n=Count("products"),
        avg=Avg("products__price"),
        low_price=Min("products__price"),
        high_price=Max("products__price"),
        units=Sum("products__stock", default=0),
        low=Count("products", filter=Q(products__stock__lte=low)),
    ).values_list("name", "n", "avg", "low_price", "high_price", "units", "low", "pk")
    revenue = dict(
        OrderItem.objects.filter(NET_ITEMS)
        .values("product__category")
        .annotate(total=Sum(F("quantity") * F("unit_price")))
        .values_list("product__category", "total")
        .order_by()
    )
    return {
        name: (
            n,
            round(float(avg), 6) if avg is not None else None,
            lo,
            hi,
            units,
            low_n,
            int(revenue.get(pk) or 0),
        )
        for name, n, avg, lo, hi, units, low_n, pk in rows
    }


def category_groups(min_avg_price: int) -> list[tuple[Any, ...]]:
    rows = (
        Product.objects.values("shop__name", "category__name")
        .annotate(avg_price=Avg("price"), n=Count("pk"))
        .filter(avg_price__gte=min_avg_price)
        .order_by("-avg_price", "shop__name", "category__name")
    )
    return [
        (r["shop__name"], r["category__name"], r["n"], round(float(r["avg_price"]), 6))
        for r in rows
    ]


def rank_window(by: str, function: str, top: int) -> list[tuple[Any, ...]]:
    window_fn = RANK_FUNCTIONS[function]
    if by == "price":
        order = [F("price").desc()] + ([F("pk").asc()] if function == "row_number" else [])
        rows = (
            Product.objects.annotate(
                position=Window(window_fn(), partition_by=[F("category_id")], order_by=order)
            )
            .filter(position__lte=top)
            .values_list("category__name", "position", "pk", "price")
            .order_by("category__name", "position", "pk")
        )
        return list(rows)
    revenue = Sum(F("quantity") * F("unit_price"))
    order = [F("revenue").desc()] + ([F("product_id").asc()] if function == "row_number" else [])
    rows = (
        OrderItem.objects.filter(NET_ITEMS)
        .values(
            "product_id",
            category_name=F("product__category__name"),
            category_id=F("product__category_id"),
        )
        .annotate(revenue=revenue)
        .annotate(position=Window(window_fn(), partition_by=[F("category_id")], order_by=order))
        .filter(position__lte=top)
        .order_by("category_name", "position", "product_id")
    )
    return [(r["category_name"], r["position"], r["product_id"], int(r["revenue"])) for r in rows]


def trending(window: str, now: datetime, limit: int = 10) -> list[tuple[int, int, int]]:
    length, _ = TRENDING_WINDOWS[window]
    since = window_start(now, length)
    rows = (
        OrderItem.objects.filter(NET_ITEMS, order__paid_at__gte=since)
        .values("product_id")
        .annotate(revenue=Sum(F("quantity") * F("unit_price")), units=Sum("quantity"))
        .order_by("-revenue", "product_id")[:limit]
    )
    return [(r["product_id"], int(r["revenue"]), int(r["units"])) for r in rows]


def shop_activity() -> list[tuple[Any, ...]]:
    last_paid = (
        Order.objects.filter(shop=OuterRef("pk"), paid=True)
        .order_by("-paid_at")
        .values("paid_at")[:1]
    )
    open_count = (
        Order.objects.open()
        .filter(shop=OuterRef("pk"))
        .values("shop")
        .annotate(n=Count("pk"))
        .values("n")
    )
    shops = Shop.objects.annotate(
        last_paid_at=Subquery(last_paid),
        public=Exists(Product.objects.public().filter(shop=OuterRef("pk"))),
        open_orders=Coalesce(Subquery(open_count, output_field=IntegerField()), 0),
    ).order_by(F("last_paid_at").desc(nulls_last=True), "name")
    return [(s.name, s.last_paid_at, s.public, s.open_orders) for s in shops]


def overview(low: int, now: datetime) -> tuple[int, ...]:
    products = Product.objects.aggregate(
        total=Count("pk"),
        low=Count("pk", filter=Q(stock__lte=low)),
        out=Count("pk", filter=Q(stock=0)),
        units=Sum("stock", default=0),
    )
    orders = Order.objects.aggregate(
        open=Count("pk", filter=Q(paid=False, cancelled_at__isnull=True)),
        paid=Count(
            "pk",
            filter=Q(
                paid=True,
                cancelled_at__isnull=True,
                paid_at__gte=window_start(now, timedelta(hours=24)),
            ),
        ),
    )
    return (
        products["total"],
        products["low"],
        products["out"],
        products["units"],
        orders["open"],
        orders["paid"],
    )
