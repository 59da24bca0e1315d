"""Top-N products per category, ranked by a window function in the database."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from django.db.models import F, Q, Sum, Window
from django.db.models.functions import DenseRank, Rank, RowNumber

from store.models import OrderItem, Product

RankBy = Literal["price", "revenue"]
RankFunction = Literal["rank", "dense_rank", "row_number"]
RANK_FUNCTIONS = {"rank": Rank, "dense_rank": DenseRank, "row_number": RowNumber}
RANK_MAX = 20


@dataclass(frozen=True)
class RankedProduct:
    position: int
    product_id: int
    name: str
    category: str
    shop: str
    value: int  # price or revenue, in cents


def rank_window(*, by: RankBy, function: RankFunction, top: int) -> list[RankedProduct]:
    """The ``top`` products of every category by price or by paid revenue.

    RANK and DENSE_RANK order by the value alone so ties share a position (and a
    category may return more than ``top`` rows); ROW_NUMBER breaks ties by id so
    it is deterministic. Filtering on the window annotation makes Django wrap the
    query in a subquery: the cut happens in the database.
    """
    if not 1 <= top <= RANK_MAX:
        raise ValueError(f"top must be 1-{RANK_MAX}, got {top}")
    if by == "price":
        return _by_price(function, top)
    if by == "revenue":
        return _by_revenue(function, top)
    raise ValueError(f"unknown ranking {by!r}")


def _by_price(function: RankFunction, top: int) -> list[RankedProduct]:
    window_fn = RANK_FUNCTIONS[function]
    order = [F("price").desc()] + ([F("pk").asc()] if function == "row_number" else [])
    rows = (
        Product.objects.annotate(
            position=Window(window_fn(), partition_by=[F("category_id")], order_by=order)
        )
        .filter(position__lte=top)
        .values(
            "position",
            "pk",
            "name",
            "price",
            category_name=F("category__name"),
            shop_name=F("shop__name"),
        )
        .order_by("category_name", "position", "pk")
    )
    return [
        RankedProduct(
            position=r["position"],
            product_id=r["pk"],
            name=r["name"],
            category=r["category_name"],
            shop=r["shop_name"],
            value=r["price"],
        )
        for r in rows
    ]


def _by_revenue(function: RankFunction, top: int) -> list[RankedProduct]:
    window_fn = RANK_FUNCTIONS[function]
    # Starting from the paid items keeps products that never sold out of the
    # aggregate; the window runs over the per-product sums (after GROUP BY).
    revenue = Sum(F("quantity") * F("unit_price"))
    order = [F("revenue").desc()] + ([F("product_id").asc()] if function == "row_number" else [])
    rows = (
        OrderItem.objects.filter(Q(order__paid=True))
        .values(
            "product_id",
            name=F("product__name"),
            category_name=F("product__category__name"),
            shop_name=F("product__shop__name"),
            category_id=F("product__category_id"),
        )
        .annotate(revenue=revenue)
        .annotate(position=Window(window_fn(), partition_by=[F("category_id")], order_by=order))
        .filter(position__lte=top)
        .order_by("category_name", "position", "product_id")
    )
    return [
        RankedProduct(
            position=r["position"],
            product_id=r["product_id"],
            name=r["name"],
            category=r["category_name"],
            shop=r["shop_name"],
            value=int(r["revenue"]),
        )
        for r in rows
    ]
