"""Rollup upkeep: the summary tables the panels read, kept exact by every write.

Every write adds its *contribution* to the rollups inside its own transaction: a
product contributes its count, price, stock and low-stock flags to its shop x
category; a paid, not cancelled order contributes its revenue per product, per
hour, per shop; an open order counts as open. A change is the new contribution
minus the old one. ``RollupDeltas`` collects a transaction's deltas and ``apply()``
writes them as ``x = x + d`` upserts, one statement per table, rows in key order
and tables in one fixed order (product revenue, categories, product sales, shops,
shop sales), so two writers never wait on each other's rollup rows in a cycle.

Stock is the exception: the stock ledger is already an append-only log of every
stock change, so a stock change writes nothing here (the hot adjustment statement
stays one row update plus its ledger row) and ``stock_ledger_fold`` adds the ledger
to CategoryRollup's stock columns in the background; readers add the unfolded tail.

``store.selectors.rollups`` holds the same definitions as full scans; ``manage.py
rollups verify`` compares the two and ``rollups rebuild`` rewrites a rollup from
the full scan (``rollups_rebuild`` below).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import connections, transaction
from django.db.models import Count, F, QuerySet, Sum
from django.utils import timezone

from store.models import (
    ROLLUP_SLOTS,
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
)
from store.selectors.trending import TRENDING_WINDOWS, window_start

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

    # --- contributions ------------------------------------------------------

    def product(self, state: ProductState, sign: int) -> None:
        low = low_stock_threshold()
        row = self.categories[(state.shop_id, state.category_id, state.pk % ROLLUP_SLOTS)]
        row[0] += sign
        row[1] += sign * state.price
        row[2] += sign * state.stock
        row[3] += sign * (state.stock <= low)
        row[4] += sign * (state.stock == 0)

    def order(self, state: OrderState, sign: int) -> None:
        slot = state.pk % ROLLUP_SLOTS
        if state.is_open:
            self.shops[(state.shop_id, slot)][0] += sign
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
        starts = _window_starts(cursor, for_share=True)
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


# --- Rolling windows: trending's 24 h, 7 d and 30 d -----------------------------

WINDOW_HOURS = tuple(length // timedelta(hours=1) for length, _ in TRENDING_WINDOWS.values())


def _window_starts(cursor: Any, *, for_share: bool = False) -> dict[int, datetime]:
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


def sales_windows_advance(*, now: datetime | None = None) -> None:
    """Move each rolling window to the current hour: take out the hours that left it.

    The cost is the sales of the hours that left (one hour's worth when called
    every hour), never the window's. A window that has no start yet is built from
    the hourly sales, with their writers held off for that one statement.
    """
    now = now or timezone.now()
    table = ProductWindowSales._meta.db_table
    sales = ProductSales._meta.db_table
    with connections["default"].cursor() as cursor:
        held = _window_starts(cursor)
    for hours in WINDOW_HOURS:
        start = window_start(now, timedelta(hours=hours))
        if held.get(hours) == start:
            continue  # current: the common case costs the one read above
        with transaction.atomic(), connections["default"].cursor() as cursor:
            db_start = cursor.db.ops.adapt_datetimefield_value(start)
            cursor.execute(
                f"INSERT INTO {SalesWindow._meta.db_table} (window_hours, start) "  # noqa: S608
                "VALUES (%s, %s) ON CONFLICT (window_hours) DO NOTHING RETURNING window_hours",
                [hours, db_start],
            )
            if cursor.fetchone() is not None:  # new: build it
                _lock(cursor, ProductSales)
                cursor.execute(f"DELETE FROM {table} WHERE window_hours = %s", [hours])  # noqa: S608
                cursor.execute(
                    f"INSERT INTO {table} (window_hours, product_id, units, revenue) "  # noqa: S608
                    f"SELECT %s, product_id, SUM(units), SUM(revenue) FROM {sales} "
                    "WHERE hour >= %s GROUP BY product_id",
                    [hours, db_start],
                )
                continue
            if cursor.db.features.has_select_for_update:
                cursor.execute(
                    f"SELECT 1 FROM {SalesWindow._meta.db_table} "  # noqa: S608
                    "WHERE window_hours = %s FOR UPDATE",
                    [hours],
                )
            held_start = _window_starts(cursor)[hours]
            if held_start >= start:
                continue
            db_held = cursor.db.ops.adapt_datetimefield_value(held_start)
            cursor.execute(
                f"INSERT INTO {table} AS w (window_hours, product_id, units, revenue) "  # noqa: S608
                f"SELECT %s, product_id, -SUM(units), -SUM(revenue) FROM {sales} "
                "WHERE hour >= %s AND hour < %s GROUP BY product_id "
                "ON CONFLICT (window_hours, product_id) DO UPDATE "
                "SET units = w.units + excluded.units, revenue = w.revenue + excluded.revenue",
                [hours, db_held, db_start],
            )
            cursor.execute(
                f"DELETE FROM {table} WHERE window_hours = %s AND units = 0 AND revenue = 0",  # noqa: S608
                [hours],
            )
            cursor.execute(
                f"UPDATE {SalesWindow._meta.db_table} SET start = %s WHERE window_hours = %s",  # noqa: S608
                [db_start, hours],
            )


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

    Locks the matching rows first (in pk order, like every other product lock), so
    the prices read here are the ones the UPDATE replaces.
    """
    deltas = RollupDeltas()
    connection = connections["default"]
    if connection.features.has_select_for_update:
        sql, params = (
            matching.select_for_update().order_by("pk").values("pk").query.sql_with_params()
        )
        with connection.cursor() as cursor:
            cursor.execute(f"SELECT count(*) FROM ({sql}) locked", params)  # noqa: S608
    grouped = (
        matching.order_by()
        .annotate(slot=F("pk") % ROLLUP_SLOTS)
        .values_list("shop_id", "category_id", "slot")
        .annotate(delta=Sum(new_price - F("price")))
    )
    for shop_id, category_id, slot, delta in grouped:
        deltas.categories[(shop_id, category_id, slot)][1] += int(delta)
    return deltas


# --- The stock ledger, folded ---------------------------------------------------


def ledger_written(movement_id: int) -> None:
    """After a ledger row: every STOREOPS_LEDGER_FOLD_EVERY-th id folds the ledger.

    The fold runs once the writer's transaction has committed, so it never holds the
    writer's locks; ids skipped by rolled-back inserts only make one tail longer. A
    failing fold is logged, not raised: the write it follows has committed, and the
    next fold takes the rows this one left.
    """
    if movement_id % settings.STOREOPS_LEDGER_FOLD_EVERY == 0:
        transaction.on_commit(stock_ledger_fold, robust=True)


def stock_ledger_fold() -> int:
    """Add the finished part of the ledger's tail to CategoryRollup; rows folded.

    One fold at a time (the LedgerFold row, locked with SKIP LOCKED: a second caller
    returns at once). On PostgreSQL a fold adds the rows up to the candidate end the
    previous fold recorded, once the writing transactions of this database that were
    running then have ended, and records a new candidate: so the tail stays within
    two folds' worth of rows. A transaction that drew a ledger id had written before
    (every stock write updates the product first), so it had a transaction id and
    shows in pg_stat_activity (prepared transactions would not: none are used).
    SQLite has a single writer: what it sees committed is final at once.
    """
    from store.selectors.rollups import stock_tail

    db = connections["default"]
    with transaction.atomic():
        fold = LedgerFold.objects.select_for_update(skip_locked=True).filter(pk=1).first()
        if fold is None:
            if LedgerFold.objects.exists():
                return 0  # another fold holds it
            fold = LedgerFold.objects.create(pk=1)  # after a flush (tests)
        with db.cursor() as cursor:
            if db.vendor == "postgresql":
                ledger = StockMovement._meta.db_table
                ready = True
                if fold.candidate_waits_for:
                    cursor.execute(
                        "SELECT NOT EXISTS (SELECT 1 FROM pg_stat_activity"
                        " WHERE datname = current_database()"
                        " AND backend_xid::text::bigint = ANY(%s))",
                        [fold.candidate_waits_for],
                    )
                    ready = cursor.fetchone()[0]
                end = fold.candidate_id if ready else fold.folded_id
                # The last id (of the statement's snapshot) and, read after it, the
                # writing transactions still running: any lower id is theirs. (The
                # activity view is cached per transaction: read it afresh.)
                cursor.execute("SELECT pg_stat_clear_snapshot()")
                cursor.execute(
                    f"SELECT (SELECT max(id) FROM {ledger}),"  # noqa: S608
                    " ARRAY(SELECT backend_xid::text::bigint FROM pg_stat_activity"
                    " WHERE datname = current_database() AND backend_xid IS NOT NULL"
                    " AND pid <> pg_backend_pid())"
                )
                last, running = cursor.fetchone()
            else:
                last = StockMovement.objects.order_by("-pk").values_list("pk", flat=True).first()
                running, end = [], last or fold.folded_id
        rows = 0
        if end > fold.folded_id:
            deltas = RollupDeltas()
            for row in stock_tail().filter(pk__lte=end).annotate(rows=Count("pk")):
                key = (row["shop_id"], row["category_id"], row["slot"])
                values = deltas.categories[key]
                values[2] += row["stock_sum"]
                values[3] += row["low_stock"]
                values[4] += row["out_of_stock"]
                rows += row["rows"]
            deltas.apply()
            fold.folded_id = end
        if db.vendor != "postgresql":
            fold.candidate_id = fold.folded_id
        elif fold.folded_id == fold.candidate_id and (last or 0) > fold.candidate_id:
            fold.candidate_id, fold.candidate_waits_for = last, running
        fold.save()
    return rows


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


# --- Rebuild ------------------------------------------------------------------

# In rebuild order: category revenue is summed from the product revenue rollup.
ROLLUP_NAMES = ("product-revenue", "product-sales", "categories", "shops", "shop-sales")


def _insert_from(cursor: Any, model: Any, queryset: QuerySet[Any], conflict: str = "") -> None:
    """``INSERT INTO table <the queryset's SELECT>``: no rows pass through Python."""
    from store.selectors.rollups import select_columns

    sql, params = queryset.query.sql_with_params()
    columns = ", ".join(select_columns(queryset))
    cursor.execute(
        f"INSERT INTO {model._meta.db_table} ({columns}) {sql} {conflict}",
        params,
    )


def _lock(cursor: Any, model: Any) -> None:
    """Block this rollup's writers for one batch (they wait, then add their delta).

    SHARE ROW EXCLUSIVE conflicts with the ROW EXCLUSIVE lock every upsert takes,
    so a batch reads the base tables only after every writer that already touched
    the rollup has committed, and writers that come later wait for the batch.
    SQLite's IMMEDIATE transactions serialise writers already.
    """
    if cursor.db.vendor == "postgresql":
        cursor.execute(f"LOCK TABLE {model._meta.db_table} IN SHARE ROW EXCLUSIVE MODE")


def _rebuild_batch(cursor: Any, name: str, scope: Any, *, ledger_tail: bool) -> None:
    """Replace one batch of rows: a shop's (``scope`` = shop id), a product id range
    (``scope`` = (first, stop)), or, with ``scope`` None, the whole table."""
    from store.selectors import rollups as full

    ledger = StockMovement._meta.db_table

    if scope is None and cursor.db.vendor == "postgresql":
        # Whole-table aggregates sort and hash millions of rows: let them use memory.
        cursor.execute("SET LOCAL work_mem = '128MB'")
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
        _lock(cursor, model)
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
    _lock(cursor, model)
    if scope is None:
        model.objects.all().delete()
        _insert_from(cursor, model, rows())
        return
    first, stop = scope
    model.objects.filter(product_id__gte=first, product_id__lt=stop).delete()
    _insert_from(cursor, model, rows(product_range=(first, stop)))


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
        plan = [
            (name, scope)
            for name in names
            for scope in (ranges if name.startswith("product") else shop_ids)
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
