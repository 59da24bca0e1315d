"""Rollup upkeep: the summary tables the panels read, kept exact by every write.

Every write adds its *contribution* to the rollups inside its own transaction: a
product contributes its count, price, stock and low-stock flags to its shop x
category; a paid, not cancelled order contributes its revenue per product, per
hour, per shop; an open order counts as open. Products and open orders also count
in the store-wide change of the hour they are written in (StoreHour). A change is
the new contribution minus the old one. ``RollupDeltas`` collects a transaction's
deltas and ``apply()`` writes them as ``x = x + d`` upserts, one statement per
table, rows in key order and tables in one fixed order (product revenue,
categories, product sales, shops, shop sales, store hours), so two writers never
wait on each other's rollup rows in a cycle.

Stock is the exception: a stock change writes nothing here, and
``store.services.ledger_fold`` adds the stock ledger to CategoryRollup and
StoreHour in the background. The rolling windows move on in ``store.services.sales_windows``;
``store.services.rollup_rebuild`` rewrites a rollup from the full scans of
``store.selectors.rollups``.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from django.conf import settings
from django.db import connections
from django.db.models import F, QuerySet, Sum
from django.utils import timezone

from store.models import (
    ROLLUP_SLOTS,
    STORE_HOUR_COLUMNS,
    CategoryRollup,
    Order,
    OrderItem,
    Product,
    ProductRevenue,
    ProductSales,
    ProductWindowSales,
    SalesWindow,
    ShopRollup,
    ShopSales,
    StoreHour,
)

logger = logging.getLogger("store.rollups")


def hour_of(moment: datetime) -> datetime:
    """The UTC hour a payment's revenue is filed under."""
    return moment.replace(minute=0, second=0, microsecond=0)


def low_stock_threshold() -> int:
    return int(settings.STOREOPS_LOW_STOCK_THRESHOLD)


@dataclass(frozen=True)
class ProductState:
    """What a product contributes to its shop x category row."""

    pk: int
    shop_id: int
    category_id: int
    price: int
    stock: int

    @classmethod
    def of(cls, product: Product) -> ProductState:
        return cls(product.pk, product.shop_id, product.category_id, product.price, product.stock)


@dataclass(frozen=True)
class Line:
    product_id: int
    quantity: int
    unit_price: int
    # The product's shop and category when the order was read; a payment files the
    # revenue where ProductRevenue says (see RollupDeltas.apply).
    shop_id: int
    category_id: int


@dataclass(frozen=True)
class OrderState:
    """What an order contributes: open, or paid (and not cancelled), or nothing."""

    pk: int
    shop_id: int
    paid: bool
    paid_at: datetime | None
    cancelled: bool
    lines: tuple[Line, ...]

    @classmethod
    def of(cls, order: Order, lines: Sequence[Line]) -> OrderState:
        return cls(
            order.pk,
            order.shop_id,
            order.paid,
            order.paid_at,
            order.cancelled_at is not None,
            tuple(lines),
        )

    @property
    def is_open(self) -> bool:
        return not self.paid and not self.cancelled

    @property
    def counts_as_revenue(self) -> bool:
        # Net revenue: a paid order can only be cancelled with a refund.
        return self.paid and not self.cancelled and self.paid_at is not None


def order_lines(order_id: int) -> list[Line]:
    """One query: the order's lines with their products' shop and category."""
    rows = (
        OrderItem.objects.filter(order_id=order_id)
        .order_by("product_id", "pk")
        .values_list(
            "product_id", "quantity", "unit_price", "product__shop_id", "product__category_id"
        )
    )
    return [Line(*row) for row in rows]


# Category row columns, in the order RollupDeltas keeps them.
_CATEGORY_COLUMNS = ("products", "price_sum", "stock_sum", "low_stock", "out_of_stock", "revenue")


@dataclass
class RollupDeltas:
    """A transaction's changes to the rollups, written by ``apply()``."""

    categories: dict[tuple[int, int, int], list[int]] = field(
        default_factory=lambda: defaultdict(lambda: [0] * len(_CATEGORY_COLUMNS))
    )
    # product -> [shop, category, units, revenue]; revenue lands in the category
    # that ProductRevenue attributes the product to.
    product_revenue: dict[int, list[int]] = field(default_factory=dict)
    product_sales: dict[tuple[int, datetime], list[int]] = field(
        default_factory=lambda: defaultdict(lambda: [0, 0])
    )
    shops: dict[tuple[int, int], list[Any]] = field(
        default_factory=lambda: defaultdict(lambda: [0, None])
    )
    shop_sales: dict[tuple[int, datetime, int], list[int]] = field(
        default_factory=lambda: defaultdict(lambda: [0, 0])
    )
    # (hour, slot) -> StoreHour columns: the headline levels' change in that hour
    store_hours: dict[tuple[datetime, int], list[int]] = field(
        default_factory=lambda: defaultdict(lambda: [0] * len(STORE_HOUR_COLUMNS))
    )

    # --- contributions ------------------------------------------------------

    def product(self, state: ProductState, sign: int) -> None:
        low = low_stock_threshold()
        row = self.categories[(state.shop_id, state.category_id, state.pk % ROLLUP_SLOTS)]
        row[0] += sign
        row[1] += sign * state.price
        row[2] += sign * state.stock
        row[3] += sign * (state.stock <= low)
        row[4] += sign * (state.stock == 0)
        hour = self.store_hours[(hour_of(timezone.now()), state.pk % ROLLUP_SLOTS)]
        hour[0] += sign
        hour[1] += sign * state.stock
        hour[2] += sign * (state.stock <= low)
        hour[3] += sign * (state.stock == 0)

    def order(self, state: OrderState, sign: int) -> None:
        slot = state.pk % ROLLUP_SLOTS
        if state.is_open:
            self.shops[(state.shop_id, slot)][0] += sign
            self.store_hours[(hour_of(timezone.now()), slot)][4] += sign
        if state.paid and state.paid_at is not None and sign > 0:
            # "Last paid" is the latest payment received, refunded or not: only grows.
            shop = self.shops[(state.shop_id, slot)]
            shop[1] = state.paid_at if shop[1] is None else max(shop[1], state.paid_at)
        if not state.counts_as_revenue:
            return
        assert state.paid_at is not None
        hour = hour_of(state.paid_at)
        total = 0
        for line in state.lines:
            amount = line.quantity * line.unit_price
            total += amount
            revenue = self.product_revenue.setdefault(
                line.product_id, [line.shop_id, line.category_id, 0, 0]
            )
            revenue[2] += sign * line.quantity
            revenue[3] += sign * amount
            sales = self.product_sales[(line.product_id, hour)]
            sales[0] += sign * line.quantity
            sales[1] += sign * amount
        shop_sales = self.shop_sales[(state.shop_id, hour, slot)]
        shop_sales[0] += sign
        shop_sales[1] += sign * total

    # --- writing ------------------------------------------------------------

    def apply(self, using: str = "default") -> None:
        """Write every delta: one upsert per table, rows in key order."""
        with connections[using].cursor() as cursor:
            attributed = self._apply_product_revenue(cursor)
            for product_id, (shop_id, category_id, revenue) in attributed.items():
                self.categories[(shop_id, category_id, product_id % ROLLUP_SLOTS)][5] += revenue
            _upsert(
                cursor,
                CategoryRollup,
                ("shop_id", "category_id", "slot"),
                _CATEGORY_COLUMNS,
                [(*key, *values) for key, values in sorted(self.categories.items()) if any(values)],
            )
            _upsert(
                cursor,
                ProductSales,
                ("product_id", "hour"),
                ("units", "revenue"),
                [(*key, *v) for key, v in sorted(self.product_sales.items()) if any(v)],
            )
            self._apply_windows(cursor)
            self._apply_shops(cursor)
            _upsert(
                cursor,
                ShopSales,
                ("shop_id", "hour", "slot"),
                ("orders", "revenue"),
                [(*key, *v) for key, v in sorted(self.shop_sales.items()) if any(v)],
            )
            _upsert(
                cursor,
                StoreHour,
                ("hour", "slot"),
                STORE_HOUR_COLUMNS,
                [(*key, *v) for key, v in sorted(self.store_hours.items()) if any(v)],
            )
        self.__init__()  # type: ignore[misc]  # applied: start empty again

    def _apply_product_revenue(self, cursor: Any) -> dict[int, tuple[int, int, int]]:
        rows = [
            (pk, shop, category, units, revenue)
            for pk, (shop, category, units, revenue) in sorted(self.product_revenue.items())
            if units or revenue
        ]
        if not rows:
            return {}
        table = ProductRevenue._meta.db_table
        values = ", ".join(["(%s, %s, %s, %s, %s)"] * len(rows))
        # On conflict the stored shop and category stand (a move keeps them current
        # under this row's lock), and RETURNING tells where to credit the revenue.
        cursor.execute(
            f"INSERT INTO {table} (product_id, shop_id, category_id, units, revenue) "  # noqa: S608
            f"VALUES {values} ON CONFLICT (product_id) DO UPDATE SET "
            f"units = {table}.units + excluded.units, "
            f"revenue = {table}.revenue + excluded.revenue "
            "RETURNING product_id, shop_id, category_id",
            [value for row in rows for value in row],
        )
        revenue = {row[0]: row[4] for row in rows}
        return {pk: (shop, category, revenue[pk]) for pk, shop, category in cursor.fetchall()}

    def _apply_windows(self, cursor: Any) -> None:
        """Add the sales to every rolling window that still holds their hour.

        Reading the windows' starts share-locks them, so ``sales_windows_advance``
        (which locks them for update) never runs between this read and the commit.
        """
        sales = [(key, v) for key, v in sorted(self.product_sales.items()) if any(v)]
        if not sales:
            return
        starts = window_starts(cursor, for_share=True)
        rows: dict[tuple[int, int], list[int]] = defaultdict(lambda: [0, 0])
        for (product_id, hour), (units, revenue) in sales:
            for hours, start in starts.items():
                if hour >= start:
                    rows[(hours, product_id)][0] += units
                    rows[(hours, product_id)][1] += revenue
        _upsert(
            cursor,
            ProductWindowSales,
            ("window_hours", "product_id"),
            ("units", "revenue"),
            [(*key, *v) for key, v in sorted(rows.items())],
        )

    def _apply_shops(self, cursor: Any) -> None:
        rows = [
            (shop, slot, open_orders, last_paid)
            for (shop, slot), (open_orders, last_paid) in sorted(self.shops.items())
            if open_orders or last_paid is not None
        ]
        if not rows:
            return
        table = ShopRollup._meta.db_table
        values = ", ".join(["(%s, %s, %s, %s)"] * len(rows))
        # NULL-safe "latest": COALESCE on both sides, MAX of two is GREATEST/MAX by vendor.
        latest = "GREATEST" if cursor.db.vendor == "postgresql" else "MAX"
        cursor.execute(
            f"INSERT INTO {table} (shop_id, slot, open_orders, last_paid_at) "  # noqa: S608
            f"VALUES {values} ON CONFLICT (shop_id, slot) DO UPDATE SET "
            f"open_orders = {table}.open_orders + excluded.open_orders, "
            f"last_paid_at = COALESCE({latest}({table}.last_paid_at, excluded.last_paid_at), "
            f"{table}.last_paid_at, excluded.last_paid_at)",
            [_db_value(cursor, value) for row in rows for value in row],
        )


def _db_value(cursor: Any, value: Any) -> Any:
    if isinstance(value, datetime):
        return cursor.db.ops.adapt_datetimefield_value(value)
    return value


def _upsert(
    cursor: Any,
    model: Any,
    key: tuple[str, ...],
    columns: tuple[str, ...],
    rows: Sequence[tuple[Any, ...]],
) -> None:
    """``INSERT ... ON CONFLICT (key) DO UPDATE SET c = c + excluded.c`` for ``rows``."""
    if not rows:
        return
    table = model._meta.db_table
    names = (*key, *columns)
    values = ", ".join(["(" + ", ".join(["%s"] * len(names)) + ")"] * len(rows))
    increments = ", ".join(f"{c} = {table}.{c} + excluded.{c}" for c in columns)
    cursor.execute(
        f"INSERT INTO {table} ({', '.join(names)}) VALUES {values} "  # noqa: S608
        f"ON CONFLICT ({', '.join(key)}) DO UPDATE SET {increments}",
        [_db_value(cursor, value) for row in rows for value in row],
    )


# Shared with sales_windows and rollup_rebuild, which import this module (never the
# other way round): apply() reads the windows' starts, and both hold off writers.


def window_starts(cursor: Any, *, for_share: bool = False) -> dict[int, datetime]:
    """Each rolling window's start, by its length in hours (share-locked on request)."""
    lock = " FOR SHARE" if for_share and cursor.db.features.has_select_for_update else ""
    cursor.execute(
        f"SELECT window_hours, start FROM {SalesWindow._meta.db_table}{lock}"  # noqa: S608
    )
    starts = {}
    for hours, start in cursor.fetchall():
        if not isinstance(start, datetime):  # SQLite hands back text
            start = datetime.fromisoformat(start)
        starts[hours] = start if timezone.is_aware(start) else start.replace(tzinfo=UTC)
    return starts


def hold_writers(cursor: Any, model: Any) -> None:
    """Block this rollup's writers for one batch (they wait, then add their delta).

    SHARE ROW EXCLUSIVE conflicts with the ROW EXCLUSIVE lock every upsert takes,
    so a batch reads the base tables only after every writer that already touched
    the rollup has committed, and writers that come later wait for the batch.
    SQLite's IMMEDIATE transactions serialise writers already.
    """
    if cursor.db.vendor == "postgresql":
        cursor.execute(f"LOCK TABLE {model._meta.db_table} IN SHARE ROW EXCLUSIVE MODE")


# --- Moves: a product changes shop or category --------------------------------


def product_revenue_move(*, product_id: int, shop_id: int, category_id: int) -> RollupDeltas:
    """Re-attribute a product's net revenue to its new shop x category.

    Locks the product's ProductRevenue row (creating it if it has never sold), so a
    payment racing the move waits and then credits the new attribution.
    """
    table = ProductRevenue._meta.db_table
    deltas = RollupDeltas()
    with connections["default"].cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} (product_id, shop_id, category_id, units, revenue) "  # noqa: S608
            "VALUES (%s, %s, %s, 0, 0) ON CONFLICT (product_id) DO UPDATE "
            f"SET units = {table}.units RETURNING shop_id, category_id, revenue",
            [product_id, shop_id, category_id],
        )
        old_shop, old_category, revenue = cursor.fetchone()
        if (old_shop, old_category) == (shop_id, category_id):
            return deltas
        cursor.execute(
            f"UPDATE {table} SET shop_id = %s, category_id = %s WHERE product_id = %s",  # noqa: S608
            [shop_id, category_id, product_id],
        )
    slot = product_id % ROLLUP_SLOTS
    deltas.categories[(old_shop, old_category, slot)][5] -= revenue
    deltas.categories[(shop_id, category_id, slot)][5] += revenue
    return deltas


def price_change_rollup(matching: QuerySet[Product], new_price: Any) -> RollupDeltas:
    """The price deltas of ``matching.update(price=new_price)``, per shop x category.

    For SQLite, whose single writer keeps the rows still between this read and the
    UPDATE (PostgreSQL counts and updates in one statement: ``store.services.prices``).
    """
    deltas = RollupDeltas()
    grouped = (
        matching.order_by()
        .annotate(slot=F("pk") % ROLLUP_SLOTS)
        .values_list("shop_id", "category_id", "slot")
        .annotate(delta=Sum(new_price - F("price")))
    )
    for shop_id, category_id, slot, delta in grouped:
        deltas.categories[(shop_id, category_id, slot)][1] += int(delta)
    return deltas


def product_added(product: Product) -> None:
    """Count a product created outside the services (tests' builders, fixtures)."""
    deltas = RollupDeltas()
    deltas.product(ProductState.of(product), 1)
    deltas.apply()


def order_added(order: Order) -> None:
    """Count an order written with its items outside the services (history, tests)."""
    deltas = RollupDeltas()
    deltas.order(OrderState.of(order, order_lines(order.pk)), 1)
    deltas.apply()
