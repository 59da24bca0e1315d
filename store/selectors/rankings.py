"""Top-N products per category, ranked by a window function in the database."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from django.db.models import F, OuterRef, Q, QuerySet, Subquery, Window
from django.db.models.functions import DenseRank, Rank, RowNumber

from store.models import Category, Product, ProductRevenue

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
    value: int  # price or net revenue, in cents


def rank_window(*, by: RankBy, function: RankFunction, top: int) -> list[RankedProduct]:
    """The ``top`` products of every category by price or by net revenue.

    RANK and DENSE_RANK order by the value alone so ties share a position (and a
    category may return more than ``top`` rows); ROW_NUMBER breaks ties by id so
    it is deterministic. Filtering on the window annotation makes Django wrap the
    query in a subquery: the cut happens in the database.

    The window runs over candidates only, so its cost is bounded by the rows it
    shows, not by the catalog: a first query finds each category's cut-off value
    (the ``top``-th value, or the ``top``-th distinct value for DENSE_RANK) with one
    index probe per category, and the second ranks the rows at or above it (index
    range scans on ``product_category_price`` or ``productrevenue_rank``).
    """
    if not 1 <= top <= RANK_MAX:
        raise ValueError(f"top must be 1-{RANK_MAX}, got {top}")
    if by == "price":
        return _by_price(function, top)
    if by == "revenue":
        return _by_revenue(function, top)
    raise ValueError(f"unknown ranking {by!r}")


def _cutoffs(values: QuerySet[Any], field: str, function: RankFunction, top: int) -> Q:
    """Rows at or above each category's cut-off (a category with fewer rows: all)."""
    ranked = values.filter(category=OuterRef("pk")).order_by(f"-{field}").values(field)
    if function == "dense_rank":
        ranked = ranked.distinct()
    cutoffs = Category.objects.annotate(cutoff=Subquery(ranked[top - 1 : top])).values_list(
        "pk", "cutoff"
    )
    candidates = Q(pk__in=[])
    for category_id, cutoff in cutoffs:
        candidates |= Q(category_id=category_id, **{f"{field}__gte": cutoff or 0})
    return candidates


def _by_price(function: RankFunction, top: int) -> list[RankedProduct]:
    window_fn = RANK_FUNCTIONS[function]
    order = [F("price").desc()] + ([F("pk").asc()] if function == "row_number" else [])
    rows = (
        Product.objects.filter(_cutoffs(Product.objects.all(), "price", function, top))
        .annotate(position=Window(window_fn(), partition_by=[F("category_id")], order_by=order))
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
    # Products with net sales only: one whose every sale was refunded is not ranked.
    sold = ProductRevenue.objects.filter(units__gt=0)
    order = [F("revenue").desc()] + ([F("product_id").asc()] if function == "row_number" else [])
    rows = (
        sold.filter(_cutoffs(sold, "revenue", function, top))
        .annotate(position=Window(window_fn(), partition_by=[F("category_id")], order_by=order))
        .filter(position__lte=top)
        .values(
            "position",
            "product_id",
            "revenue",
            name=F("product__name"),
            category_name=F("category__name"),
            shop_name=F("shop__name"),
        )
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
