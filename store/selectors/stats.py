"""Per-category and per-group catalog statistics for the dashboard panels."""

from __future__ import annotations

from dataclasses import dataclass

from django.db.models import Avg, Count, F, Max, Min, Q, Sum

from store.models import Category, OrderItem, Product

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
    """Every category with its catalog figures and its revenue from paid orders.

    Two grouped queries, not one: joining order items into the product aggregate
    would multiply product rows by their items and skew every count and average.
    ``sort`` is a column of CATEGORY_STATS_COLUMNS, ``-`` for descending; the rows
    are few (one per category), so they are merged and sorted here.
    """
    column = sort.removeprefix("-")
    if column not in CATEGORY_STATS_COLUMNS:
        raise ValueError(f"unknown sort column {sort!r}")
    rows = Category.objects.annotate(
        n_products=Count("products"),
        avg_price=Avg("products__price"),
        min_price=Min("products__price"),
        max_price=Max("products__price"),
        units=Sum("products__stock", default=0),
        low=Count("products", filter=Q(products__stock__lte=low_stock_threshold)),
    ).values_list("pk", "name", "n_products", "avg_price", "min_price", "max_price", "units", "low")
    revenue = dict(
        OrderItem.objects.filter(order__paid=True)
        .values("product__category")
        .annotate(total=Sum(F("quantity") * F("unit_price")))
        .values_list("product__category", "total")
        .order_by()
    )
    stats = [
        CategoryStat(
            id=pk,
            name=name,
            products=n,
            avg_price=float(avg) if avg is not None else None,
            min_price=low_price,
            max_price=high_price,
            stock=units,
            low_stock=low,
            revenue=int(revenue.get(pk) or 0),
        )
        for pk, name, n, avg, low_price, high_price, units, low in rows
    ]
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

    The threshold is a HAVING clause: Django puts a filter on an aggregate
    annotation after GROUP BY.
    """
    rows = (
        Product.objects.values("shop_id", "shop__name", "category_id", "category__name")
        .annotate(avg_price=Avg("price"), n_products=Count("pk"))
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
