"""The rollups' definitions as full scans, and the check that both agree.

Each ``*_rows`` queryset computes a rollup table's rows from the base tables, with
the table's own column names (``rollups_rebuild`` inserts them as they are);
``rollup_differences`` compares every rollup with its full scan in the database
(FULL OUTER JOIN, one snapshot) and returns the rows that disagree.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

from django.conf import settings
from django.db import connections, transaction
from django.db.models import Count, F, Max, Q, QuerySet, Subquery, Sum, Value
from django.db.models.functions import Coalesce, TruncHour
from django.utils import timezone

from store.models import (
    ROLLUP_SLOTS,
    STORE_HOUR_COLUMNS,
    CategoryRollup,
    LedgerFold,
    Order,
    OrderItem,
    Product,
    ProductRevenue,
    ProductSales,
    ProductWindowSales,
    SalesWindow,
    ShopRollup,
    ShopSales,
    StockMovement,
    StoreHour,
)

# Net revenue: paid and not cancelled (a paid order is only cancelled with a refund).
NET_PAID_ITEMS = Q(order__paid=True, order__cancelled_at__isnull=True)
NET_PAID_ORDERS = Q(paid=True, cancelled_at__isnull=True)


def _product_range(queryset: QuerySet[Any], field: str, product_range: tuple[int, int] | None):
    if product_range is None:
        return queryset
    first, stop = product_range
    return queryset.filter(**{f"{field}__gte": first, f"{field}__lt": stop})


def category_rows(*, shop_id: int | None = None) -> QuerySet[Any]:
    """Catalog figures per shop x category x slot (revenue comes separately)."""
    products = Product.objects.order_by()
    if shop_id is not None:
        products = products.filter(shop_id=shop_id)
    low = settings.STOREOPS_LOW_STOCK_THRESHOLD
    return (
        products.annotate(slot=F("pk") % ROLLUP_SLOTS)
        .values("shop_id", "category_id", "slot")
        .annotate(
            products=Count("pk"),
            price_sum=Sum("price"),
            stock_sum=Sum("stock"),
            low_stock=Count("pk", filter=Q(stock__lte=low)),
            out_of_stock=Count("pk", filter=Q(stock=0)),
        )
    )


def _unfolded_ledger() -> QuerySet[StockMovement]:
    folded = LedgerFold.objects.filter(pk=1).values("folded_id")
    return StockMovement.objects.filter(pk__gt=Coalesce(Subquery(folded), 0)).order_by()


def _stock_deltas(sign: int = 1) -> dict[str, Any]:
    """A group of ledger rows as CategoryRollup columns."""
    low = settings.STOREOPS_LOW_STOCK_THRESHOLD
    return {
        "products": Value(0),
        "price_sum": Value(0),
        "stock_sum": Sum("delta") * sign,
        "low_stock": (
            Count("pk", filter=Q(stock_after__lte=low))
            - Count("pk", filter=Q(stock_before__lte=low))
        )
        * sign,
        "out_of_stock": (
            Count("pk", filter=Q(stock_after=0)) - Count("pk", filter=Q(stock_before=0))
        )
        * sign,
    }


def stock_tail(
    *, shop_id: int | None = None, sign: int = 1, by_hour: bool = False
) -> QuerySet[Any]:
    """The ledger rows not yet folded into CategoryRollup, as rollup deltas per key
    (and per hour of the ledger row with ``by_hour``: the fold keeps StoreHour too).

    CategoryRollup's stock columns plus these are the store's stock (see LedgerFold).
    Bounded by the fold (a few thousand rows at most; a range scan of the ledger's
    primary key).
    """
    rows = _unfolded_ledger()
    if shop_id is not None:
        rows = rows.filter(shop_id=shop_id)
    rows = rows.annotate(slot=F("product_id") % ROLLUP_SLOTS)
    keys = ["shop_id", "category_id", "slot"]
    if by_hour:
        rows = rows.annotate(hour=TruncHour("created_at", tzinfo=UTC))
        keys.append("hour")
    return rows.values(*keys).annotate(**_stock_deltas(sign))


CATEGORY_TOTALS = ("products", "price_sum", "stock_sum", "low_stock", "out_of_stock", "revenue")


def category_totals() -> dict[int, dict[str, int]]:
    """CategoryRollup summed per category, stock including the unfolded ledger tail.

    One statement (rollup UNION ALL tail), so both parts are of one snapshot: a fold
    committing between two statements would count its rows twice or not at all.
    """
    stored = (
        CategoryRollup.objects.values("category_id")
        .annotate(**{column: Sum(column) for column in CATEGORY_TOTALS})
        .order_by()
    )
    tail = _unfolded_ledger().values("category_id").annotate(**_stock_deltas(), revenue=Value(0))
    totals: dict[int, dict[str, int]] = {}
    rows = cast(Iterable[dict[str, Any]], stored.union(tail, all=True))
    for row in rows:
        total = totals.setdefault(row["category_id"], dict.fromkeys(CATEGORY_TOTALS, 0))
        for column in CATEGORY_TOTALS:
            total[column] += int(row[column] or 0)
    return totals


def category_revenue_rows(*, shop_id: int | None = None) -> QuerySet[Any]:
    """Net revenue per shop x category x slot of the products sold."""
    items = OrderItem.objects.filter(NET_PAID_ITEMS).order_by()
    if shop_id is not None:
        items = items.filter(product__shop_id=shop_id)
    return (
        items.annotate(
            shop_id=F("product__shop_id"),
            category_id=F("product__category_id"),
            slot=F("product_id") % ROLLUP_SLOTS,
        )
        .values("shop_id", "category_id", "slot")
        .annotate(revenue=Sum(F("quantity") * F("unit_price")))
    )


def category_revenue_from_products(*, shop_id: int | None = None) -> QuerySet[Any]:
    """Net revenue per shop x category x slot, summed from the product revenue rollup
    (the rebuild's way: a few hundred thousand rows, not every order item)."""
    rows = ProductRevenue.objects.order_by()
    if shop_id is not None:
        rows = rows.filter(shop_id=shop_id)
    return (
        rows.annotate(slot=F("product_id") % ROLLUP_SLOTS)
        .values("shop_id", "category_id", "slot")
        .annotate(revenue=Sum("revenue"))
    )


def product_revenue_rows(*, product_range: tuple[int, int] | None = None) -> QuerySet[Any]:
    items = _product_range(OrderItem.objects.filter(NET_PAID_ITEMS), "product_id", product_range)
    return (
        items.order_by()
        .values("product_id")
        .annotate(
            shop_id=Max("product__shop_id"),
            category_id=Max("product__category_id"),
            units=Sum("quantity"),
            revenue=Sum(F("quantity") * F("unit_price")),
        )
    )


def product_sales_rows(*, product_range: tuple[int, int] | None = None) -> QuerySet[Any]:
    items = _product_range(OrderItem.objects.filter(NET_PAID_ITEMS), "product_id", product_range)
    return (
        items.order_by()
        .annotate(hour=TruncHour("order__paid_at", tzinfo=UTC))
        .values("product_id", "hour")
        .annotate(units=Sum("quantity"), revenue=Sum(F("quantity") * F("unit_price")))
    )


def shop_rows(*, shop_id: int | None = None) -> QuerySet[Any]:
    orders = Order.objects.order_by()
    if shop_id is not None:
        orders = orders.filter(shop_id=shop_id)
    return (
        orders.annotate(slot=F("pk") % ROLLUP_SLOTS)
        .values("shop_id", "slot")
        .annotate(
            open_orders=Count("pk", filter=Q(paid=False, cancelled_at__isnull=True)),
            # The latest payment received, refunded or not.
            last_paid_at=Max("paid_at", filter=Q(paid=True)),
        )
    )


def shop_sales_rows(*, shop_id: int | None = None) -> QuerySet[Any]:
    orders = Order.objects.filter(NET_PAID_ORDERS).order_by()
    if shop_id is not None:
        orders = orders.filter(shop_id=shop_id)
    return (
        orders.annotate(hour=TruncHour("paid_at", tzinfo=UTC), slot=F("pk") % ROLLUP_SLOTS)
        .values("shop_id", "hour", "slot")
        .annotate(orders=Count("pk"), revenue=Sum("total"))
    )


# --- Store hours: how the headline levels moved per hour ------------------------


def _hourly(queryset: QuerySet[Any], moment: Any, slot: Any | None) -> QuerySet[Any]:
    """Grouped by the hour of ``moment`` (and by ``slot`` unless it is None)."""
    grouped = queryset.order_by().annotate(hour=TruncHour(moment, tzinfo=UTC))
    if slot is None:
        return grouped.values("hour")
    return grouped.annotate(slot=slot).values("hour", "slot")


def _ledger_levels(sign: int = 1) -> dict[str, Any]:
    """A group of ledger rows as StoreHour's catalog columns (``_stock_deltas`` renamed)."""
    deltas = _stock_deltas(sign)
    return {
        "products": Value(0),
        "units": deltas["stock_sum"],
        "low_stock": deltas["low_stock"],
        "out_of_stock": deltas["out_of_stock"],
    }


def _ledger_as_store_hours(
    rows: QuerySet[StockMovement], *, sign: int = 1, per_slot: bool = True
) -> QuerySet[Any]:
    slot = F("product_id") % ROLLUP_SLOTS if per_slot else None
    return _hourly(rows, "created_at", slot).annotate(**_ledger_levels(sign), open_orders=Value(0))


def store_hour_tail(
    *, sign: int = 1, per_slot: bool = True, since: datetime | None = None
) -> QuerySet[Any]:
    """The unfolded ledger as StoreHour deltas per hour (x slot), from ``since``."""
    rows = _unfolded_ledger()
    if since is not None:
        rows = rows.filter(created_at__gte=since)
    return _ledger_as_store_hours(rows, sign=sign, per_slot=per_slot)


def as_utc_hour(hour: datetime | str) -> datetime:
    """An hour as an aware UTC datetime (SQLite hands back a TruncHour as text)."""
    if isinstance(hour, str):
        hour = datetime.fromisoformat(hour)
    return hour if timezone.is_aware(hour) else hour.replace(tzinfo=UTC)


def store_hour_parts() -> list[QuerySet[Any]]:
    """StoreHour rebuilt from the base tables: four full scans, each grouped by hour x
    slot, whose sums are the table. What history keeps: products at their creation
    with their initial stock, every ledger row at its time, orders opening when
    placed and leaving the open state when paid or cancelled. A deleted product
    leaves no record, so a rebuilt history leaves it out of every hour (while it is
    kept, the live rows hold its creation and its deletion).
    """
    low = settings.STOREOPS_LOW_STOCK_THRESHOLD
    slot = F("pk") % ROLLUP_SLOTS
    products = _hourly(Product.objects.all(), "created_at", slot).annotate(
        products=Count("pk"),
        units=Sum("initial_stock"),
        low_stock=Count("pk", filter=Q(initial_stock__lte=low)),
        out_of_stock=Count("pk", filter=Q(initial_stock=0)),
        open_orders=Value(0),
    )
    nothing = {c: Value(0) for c in STORE_HOUR_COLUMNS[:4]}
    placed = _hourly(Order.objects.all(), "created_at", slot).annotate(
        **nothing, open_orders=Count("pk")
    )
    left = _hourly(
        Order.objects.filter(Q(paid=True) | Q(cancelled_at__isnull=False)),
        Coalesce("paid_at", "cancelled_at", "created_at"),
        slot,
    ).annotate(**nothing, open_orders=-Count("pk"))
    return [products, _ledger_as_store_hours(StockMovement.objects.all()), placed, left]


def _store_levels_by_slot() -> QuerySet[Any]:
    """Today's catalog levels per slot: what all StoreHour rows add up to."""
    low = settings.STOREOPS_LOW_STOCK_THRESHOLD
    return (
        Product.objects.order_by()
        .annotate(slot=F("pk") % ROLLUP_SLOTS)
        .values("slot")
        .annotate(
            products=Count("pk"),
            units=Sum("stock"),
            low_stock=Count("pk", filter=Q(stock__lte=low)),
            out_of_stock=Count("pk", filter=Q(stock=0)),
        )
    )


def _open_orders_by_slot() -> QuerySet[Any]:
    return (
        Order.objects.filter(paid=False, cancelled_at__isnull=True)
        .order_by()
        .annotate(slot=F("pk") % ROLLUP_SLOTS)
        .values("slot")
        .annotate(open_orders=Count("pk"))
    )


def _store_tail_by_slot() -> QuerySet[Any]:
    return (
        _unfolded_ledger()
        .annotate(slot=F("product_id") % ROLLUP_SLOTS)
        .values("slot")
        .annotate(**_ledger_levels())
    )


def _store_hour_sums(*columns: str) -> str:
    sums = ", ".join(f"SUM({c}) AS {c}" for c in columns)
    # Column names from STORE_HOUR_COLUMNS, not input.
    return f"(SELECT slot, {sums} FROM {StoreHour._meta.db_table} GROUP BY slot) s"  # noqa: S608


def select_columns(queryset: QuerySet[Any]) -> list[str]:
    """The SELECT's column order as Django compiles it: fields, then annotations."""
    query = queryset.query
    return [*query.values_select, *query.annotation_select]


@dataclass(frozen=True)
class Check:
    name: str
    table: str  # the rollup's table, or a subquery over it
    key: tuple[str, ...]
    # (column, compare as "number" (missing = 0) or "value" (missing = NULL))
    columns: tuple[tuple[str, str], ...]
    full: Any  # () -> QuerySet
    # () -> QuerySet of more rows with the key and columns, summed with the table's
    # (the stock ledger's unfolded tail for the category rollup)
    tail: Any = None


CHECKS = (
    Check(
        "categories",
        CategoryRollup._meta.db_table,
        ("shop_id", "category_id", "slot"),
        tuple(
            (c, "number")
            for c in ("products", "price_sum", "stock_sum", "low_stock", "out_of_stock")
        ),
        category_rows,
        stock_tail,
    ),
    Check(
        "category revenue",
        CategoryRollup._meta.db_table,
        ("shop_id", "category_id", "slot"),
        (("revenue", "number"),),
        category_revenue_rows,
    ),
    Check(
        "product revenue",
        ProductRevenue._meta.db_table,
        ("product_id",),
        (("units", "number"), ("revenue", "number"), ("shop_id", "key"), ("category_id", "key")),
        product_revenue_rows,
    ),
    Check(
        "product sales",
        ProductSales._meta.db_table,
        ("product_id", "hour"),
        (("units", "number"), ("revenue", "number")),
        product_sales_rows,
    ),
    Check(
        "shops",
        ShopRollup._meta.db_table,
        ("shop_id", "slot"),
        (("open_orders", "number"), ("last_paid_at", "value")),
        shop_rows,
    ),
    Check(
        "shop sales",
        ShopSales._meta.db_table,
        ("shop_id", "hour", "slot"),
        (("orders", "number"), ("revenue", "number")),
        shop_sales_rows,
    ),
    # Store hours are history, so only their sums can be checked: all hours of a
    # slot add up to today's levels of the products and orders in that slot.
    Check(
        "store hours: catalog",
        _store_hour_sums(*STORE_HOUR_COLUMNS[:4]),
        ("slot",),
        tuple((c, "number") for c in STORE_HOUR_COLUMNS[:4]),
        _store_levels_by_slot,
        _store_tail_by_slot,
    ),
    Check(
        "store hours: open orders",
        _store_hour_sums("open_orders"),
        ("slot",),
        (("open_orders", "number"),),
        _open_orders_by_slot,
    ),
)


# Which rollup (as the rebuild names them) each check covers.
CHECK_ROLLUP = {
    "categories": "categories",
    "category revenue": "categories",
    "product revenue": "product-revenue",
    "product sales": "product-sales",
    "shops": "shops",
    "shop sales": "shop-sales",
    "store hours: catalog": "store-hours",
    "store hours: open orders": "store-hours",
}


@dataclass(frozen=True)
class Difference:
    rollup: str
    key: tuple[Any, ...]
    stored: tuple[Any, ...]
    scanned: tuple[Any, ...]

    def __str__(self) -> str:
        return f"{self.rollup} {self.key}: stored {self.stored}, full scan {self.scanned}"


def _difference_sql(check: Check, vendor: str) -> tuple[str, list[Any]]:
    full_sql, params = check.full().query.sql_with_params()
    table = check.table
    names = [c for c, _ in check.columns]
    stored_params: list[Any] = []
    if check.tail is not None:
        tail_sql, tail_params = check.tail().query.sql_with_params()
        key = ", ".join(check.key)
        sums = ", ".join(f"CAST(SUM({c}) AS BIGINT) AS {c}" for c in names)
        table = (
            f"(SELECT {key}, {sums} FROM (SELECT {key}, {', '.join(names)} FROM {table} "  # noqa: S608
            f"UNION ALL {tail_sql}) stored GROUP BY {key}) stored"
        )
        stored_params = list(tail_params)
    on = " AND ".join(f"r.{k} = f.{k}" for k in check.key)
    same = "IS NOT DISTINCT FROM" if vendor == "postgresql" else "IS"
    conditions = []
    for column, kind in check.columns:
        if kind == "number":
            conditions.append(f"COALESCE(r.{column}, 0) = COALESCE(f.{column}, 0)")
        elif kind == "value":
            conditions.append(f"r.{column} {same} f.{column}")
        else:  # an attribution: only where the full scan has the row
            conditions.append(f"(f.{column} IS NULL OR r.{column} = f.{column})")
    keys = ", ".join(f"COALESCE(r.{k}, f.{k})" for k in check.key)
    stored = ", ".join(f"r.{c}" for c in names)
    scanned = ", ".join(f"f.{c}" for c in names)
    sql = (
        f"SELECT {keys}, {stored}, {scanned} "  # noqa: S608
        f"FROM (SELECT {', '.join(check.key)}, {', '.join(names)} FROM {table}) r "
        f"FULL OUTER JOIN ({full_sql}) f ON {on} "
        f"WHERE NOT ({' AND '.join(conditions)}) "
        f"ORDER BY 1 LIMIT 1000"
    )
    return sql, [*stored_params, *params]


def rollup_differences(*, names: tuple[str, ...] = ()) -> list[Difference]:
    """Every rollup row that disagrees with its full scan (at most 1,000 per check).

    On PostgreSQL all checks read one REPEATABLE READ snapshot, so writes running
    meanwhile cannot show up as differences.
    """
    connection = connections["default"]
    found: list[Difference] = []
    # Inside a caller's transaction (tests) the caller's snapshot rules instead.
    own_transaction = not connection.in_atomic_block
    with transaction.atomic(), connection.cursor() as cursor:
        if connection.vendor == "postgresql" and own_transaction:
            cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        for check in CHECKS:
            if names and CHECK_ROLLUP[check.name] not in names:
                continue
            sql, params = _difference_sql(check, connection.vendor)
            found += _run(cursor, check, sql, params)
        if not names or "product-sales" in names:
            for check in _window_checks():
                sql, params = _difference_sql(check, connection.vendor)
                found += _run(cursor, check, sql, params)
    return found


def _window_checks() -> list[Check]:
    """Each rolling window holds the hourly sales from its start on."""
    checks = []
    for hours, start in SalesWindow.objects.values_list("window_hours", "start"):

        def full(start: Any = start) -> QuerySet[Any]:
            return (
                ProductSales.objects.filter(hour__gte=start)
                .order_by()
                .values("product_id")
                .annotate(units=Sum("units"), revenue=Sum("revenue"))
            )

        checks.append(
            Check(
                f"sales window {hours} h",
                # An integer from our own table, not input.
                f"(SELECT product_id, units, revenue FROM {ProductWindowSales._meta.db_table} "  # noqa: S608
                f"WHERE window_hours = {int(hours)}) w",
                ("product_id",),
                (("units", "number"), ("revenue", "number")),
                full,
            )
        )
    return checks


def _run(cursor: Any, check: Check, sql: str, params: list[Any]) -> list[Difference]:
    cursor.execute(sql, params)
    width, keys = len(check.columns), len(check.key)
    return [
        Difference(
            check.name, tuple(row[:keys]), tuple(row[keys:][:width]), tuple(row[keys:][width:])
        )
        for row in cursor.fetchall()
    ]
