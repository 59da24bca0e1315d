"""Rebuild: rewrite rollups from the base tables.

``store.selectors.rollups`` holds the same definitions as full scans; ``manage.py
rollups verify`` compares the two and ``rollups rebuild`` rewrites a rollup from
the full scan (``rollups_rebuild``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from django.db import connections, transaction
from django.db.models import QuerySet

from store.models import (
    CategoryRollup,
    Order,
    Product,
    ProductRevenue,
    ProductSales,
    SalesWindow,
    ShopRollup,
    ShopSales,
    StockMovement,
    StoreHour,
)
from store.selectors import rollups as full
from store.services.rollups import hold_writers
from store.services.sales_windows import sales_windows_advance

# In rebuild order: category revenue is summed from the product revenue rollup.
ROLLUP_NAMES = (
    "product-revenue",
    "product-sales",
    "categories",
    "shops",
    "shop-sales",
    "store-hours",
)


def _insert_from(cursor: Any, model: Any, queryset: QuerySet[Any], conflict: str = "") -> None:
    """``INSERT INTO table <the queryset's SELECT>``: no rows pass through Python."""
    sql, params = queryset.query.sql_with_params()
    columns = ", ".join(full.select_columns(queryset))
    cursor.execute(
        f"INSERT INTO {model._meta.db_table} ({columns}) {sql} {conflict}",
        params,
    )


def _rebuild_batch(cursor: Any, name: str, scope: Any, *, ledger_tail: bool) -> None:
    """Replace one batch of rows: a shop's (``scope`` = shop id), a product id range
    (``scope`` = (first, stop)), or, with ``scope`` None, the whole table."""
    ledger = StockMovement._meta.db_table

    if scope is None and cursor.db.vendor == "postgresql":
        # Whole-table aggregates sort and hash millions of rows: let them use memory.
        cursor.execute("SET LOCAL work_mem = '128MB'")
    if name == "store-hours":
        _rebuild_store_hours(cursor, ledger_tail=ledger_tail)
        return
    if name in ("categories", "shops", "shop-sales"):
        model: Any = {"categories": CategoryRollup, "shops": ShopRollup, "shop-sales": ShopSales}[
            name
        ]
        kept = {} if scope is None else {"shop_id": scope}
        if name == "categories" and ledger_tail and cursor.db.vendor == "postgresql":
            # Stock writers append to the ledger, not to this rollup: wait for the
            # running ones, hold the next ones for the batch. Ledger first, then the
            # rollup, the order every ledger writer takes them in.
            cursor.execute(f"LOCK TABLE {ledger} IN SHARE ROW EXCLUSIVE MODE")
        hold_writers(cursor, model)
        model.objects.filter(**kept).delete()
        if name == "categories":
            table = model._meta.db_table
            _insert_from(cursor, model, full.category_rows(**kept))
            if ledger_tail:
                # Readers add the unfolded ledger tail to these rows: leave it out here.
                _insert_from(
                    cursor,
                    model,
                    full.stock_tail(**kept, sign=-1),
                    "ON CONFLICT (shop_id, category_id, slot) DO UPDATE SET "
                    + ", ".join(
                        f"{c} = {table}.{c} + excluded.{c}"
                        for c in ("stock_sum", "low_stock", "out_of_stock")
                    ),
                )
            # Revenue lands on the rows just written (or new ones for a shop x
            # category whose products all moved away but whose sales remain).
            _insert_from(
                cursor,
                model,
                full.category_revenue_from_products(**kept),
                "ON CONFLICT (shop_id, category_id, slot) DO UPDATE "
                f"SET revenue = {table}.revenue + excluded.revenue",
            )
        else:
            by_shop = full.shop_rows if name == "shops" else full.shop_sales_rows
            _insert_from(cursor, model, by_shop(**kept))
        return
    model = ProductRevenue if name == "product-revenue" else ProductSales
    rows = full.product_revenue_rows if name == "product-revenue" else full.product_sales_rows
    hold_writers(cursor, model)
    if scope is None:
        model.objects.all().delete()
        _insert_from(cursor, model, rows())
        return
    first, stop = scope
    model.objects.filter(product_id__gte=first, product_id__lt=stop).delete()
    _insert_from(cursor, model, rows(product_range=(first, stop)))


def _rebuild_store_hours(cursor: Any, *, ledger_tail: bool) -> None:
    """The whole history at once (a batch of hours would still scan every table)."""
    if ledger_tail and cursor.db.vendor == "postgresql":
        # As for categories: stock writers reach this rollup through the ledger.
        cursor.execute(f"LOCK TABLE {StockMovement._meta.db_table} IN SHARE ROW EXCLUSIVE MODE")
    hold_writers(cursor, StoreHour)
    StoreHour.objects.all().delete()
    table = StoreHour._meta.db_table
    add = "ON CONFLICT (hour, slot) DO UPDATE SET " + ", ".join(
        f"{c} = {table}.{c} + excluded.{c}" for c in full.STORE_HOUR_COLUMNS
    )
    parts = full.store_hour_parts()
    if ledger_tail:
        parts.append(full.store_hour_tail(sign=-1))  # readers add the tail themselves
    for part in parts:
        _insert_from(cursor, StoreHour, part, add)


def rollups_rebuild(
    *,
    names: Sequence[str] = ROLLUP_NAMES,
    batch_products: int | None = 100_000,
    progress: Callable[[str, int, int], None] | None = None,
    ledger_tail: bool = True,
) -> int:
    """Rewrite rollups from the base tables, one short transaction per batch.

    A batch replaces the rows of one shop (categories, shops, shop sales) or of one
    product id range (product revenue and sales) with the full scan's values, under
    a lock on that rollup table held for the batch only. Batches are independent and
    idempotent: an interrupted rebuild is resumed by running it again. With
    ``batch_products=None`` each rollup is one statement over whole tables: the
    fast way when nothing writes meanwhile (seeding, a fresh migration). Returns the
    number of batches. ``ledger_tail=False`` is for migration 0011 only, which ran
    before the ledger was folded (every ledger row was in the rollup then).
    """
    unknown = set(names) - set(ROLLUP_NAMES)
    if unknown:
        raise ValueError(f"unknown rollup(s): {sorted(unknown)}")
    names = [name for name in ROLLUP_NAMES if name in names]
    shop_ids = sorted(
        set(Product.objects.order_by().values_list("shop_id", flat=True).distinct())
        | set(Order.objects.order_by().values_list("shop_id", flat=True).distinct())
    )
    last_product = Product.objects.order_by("-pk").values_list("pk", flat=True).first() or 0
    if batch_products is None:
        plan: list[tuple[str, Any]] = [(name, None) for name in names]
    else:
        ranges = [(n, n + batch_products) for n in range(0, last_product + 1, batch_products)]
        batches: dict[str, list[Any]] = {"store-hours": [None]}  # one history
        plan = [
            (name, scope)
            for name in names
            for scope in batches.get(name, ranges if name.startswith("product") else shop_ids)
        ]
    for done, (name, scope) in enumerate(plan, start=1):
        with transaction.atomic(), connections["default"].cursor() as cursor:
            _rebuild_batch(cursor, name, scope, ledger_tail=ledger_tail)
        if progress:
            progress(name, done, len(plan))
    if "product-sales" in names:
        # The rolling windows follow the hourly sales: built again from them.
        SalesWindow.objects.all().delete()
        sales_windows_advance()
    # Shops and products that no longer exist keep no rows.
    if {"categories", "shops", "shop-sales"} & set(names):
        for by_shop in (CategoryRollup, ShopRollup, ShopSales):
            by_shop.objects.exclude(shop_id__in=shop_ids).delete()  # type: ignore[attr-defined]
    for by_product in (ProductRevenue, ProductSales):
        by_product.objects.filter(product_id__gt=last_product).delete()  # type: ignore[attr-defined]
    return len(plan)
