"""Per-category and per-group catalog statistics for the dashboard panels (from rollups)."""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings
from django.db.models import Count, FloatField, OuterRef, Subquery, Sum
from django.db.models.functions import Cast

from store.models import Category, CategoryRollup, Product
from store.selectors.rollups import category_totals

CATEGORY_STATS_COLUMNS = (
    "name",
    "products",
    "avg_price",
    "min_price",
    "max_price",
    "stock",
    "low_stock",
    "revenue",
)


@dataclass(frozen=True)
class CategoryStat:
    id: int
    name: str
    products: int
    avg_price: float | None
    min_price: int | None
    max_price: int | None
    stock: int
    low_stock: int
    revenue: int


def category_stats(*, low_stock_threshold: int, sort: str = "-revenue") -> list[CategoryStat]:
    """Every category with its catalog figures and its net revenue, from the rollups.

    Three queries whatever the store's size: the shop x category rollup summed per
    category (counts, price and stock sums, low-stock counts, net revenue; with the
    stock ledger's unfolded tail, ``category_totals``), the
    categories with their cheapest and dearest price (two index probes each on
    ``product_category_price``), and, only for a threshold other than the
    configured one, the low-stock counts from the ``product_low_stock`` partial
    index. ``sort`` is a column of CATEGORY_STATS_COLUMNS, ``-`` for descending;
    the rows are few (one per category), so they are merged and sorted here.
    """
    column = sort.removeprefix("-")
    if column not in CATEGORY_STATS_COLUMNS:
        raise ValueError(f"unknown sort column {sort!r}")
    totals = category_totals()
    by_price = Product.objects.filter(category=OuterRef("pk")).values("price")
    categories = Category.objects.annotate(
        min_price=Subquery(by_price.order_by("price")[:1]),
        max_price=Subquery(by_price.order_by("-price")[:1]),
    ).values_list("pk", "name", "min_price", "max_price")
    low_counts = None
    if low_stock_threshold != settings.STOREOPS_LOW_STOCK_THRESHOLD:
        low_counts = dict(
            Product.objects.low_stock(low_stock_threshold)
            .values("category_id")
            .annotate(n=Count("pk"))
            .values_list("category_id", "n")
            .order_by()
        )
    stats = []
    for pk, name, low_price, high_price in categories:
        row = totals.get(pk, {})
        n = row.get("products", 0)
        low = low_counts.get(pk, 0) if low_counts is not None else row.get("low_stock", 0)
        stats.append(
            CategoryStat(
                id=pk,
                name=name,
                products=n,
                avg_price=row["price_sum"] / n if n else None,
                min_price=low_price,
                max_price=high_price,
                stock=row.get("stock_sum", 0),
                low_stock=low,
                revenue=row.get("revenue", 0),
            )
        )
    # None (a category without products) sorts last either way; name breaks ties.
    stats.sort(key=lambda s: s.name)
    present = [s for s in stats if getattr(s, column) is not None]
    missing = [s for s in stats if getattr(s, column) is None]
    present.sort(key=lambda s: getattr(s, column), reverse=sort.startswith("-"))
    return present + missing


@dataclass(frozen=True)
class CategoryGroup:
    shop_id: int
    shop: str
    category_id: int
    category: str
    products: int
    avg_price: float


def category_groups(*, min_avg_price: int, limit: int = 200) -> list[CategoryGroup]:
    """Shop x category groups whose average price (cents) reaches ``min_avg_price``.

    Read from the shop x category rollup (a few thousand rows whatever the catalog's
    size); the threshold is a HAVING clause: Django puts a filter on an aggregate
    annotation after GROUP BY.
    """
    average = Cast(Sum("price_sum"), FloatField()) / Cast(Sum("products"), FloatField())
    rows = (
        CategoryRollup.objects.values("shop_id", "shop__name", "category_id", "category__name")
        .annotate(n_products=Sum("products"))
        .filter(n_products__gt=0)
        .annotate(avg_price=average)
        .filter(avg_price__gte=min_avg_price)
        .order_by("-avg_price", "shop__name", "category__name")[:limit]
    )
    return [
        CategoryGroup(
            shop_id=row["shop_id"],
            shop=row["shop__name"],
            category_id=row["category_id"],
            category=row["category__name"],
            products=row["n_products"],
            avg_price=float(row["avg_price"]),
        )
        for row in rows
    ]
