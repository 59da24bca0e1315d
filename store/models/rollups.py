"""Rollups: exact summaries the panels read (kept by store/services/rollups.py and
the modules beside it: ledger_fold.py, sales_windows.py, rollup_rebuild.py)."""

from __future__ import annotations

from django.db import models

from store.models.core import Category, Product, Shop, rollup_fk

# --- Rollups: exact summaries the panels read (store/services/rollups.py) -----
# Each is kept by the very transaction that changes its inputs, with increments in
# SQL. Keys that many writers share are split into ROLLUP_SLOTS counter slots
# (product id or order id modulo the slot count) that readers sum, so no rollup row
# becomes a hot row. No database foreign keys: an FK check would share-lock the
# shop and category rows on every insert; the ORM still joins through them.

ROLLUP_SLOTS = 8


class CategoryRollup(models.Model):
    """Catalog figures and net revenue per shop x category (summed over slots).

    ``low_stock`` counts products at or under ``STOREOPS_LOW_STOCK_THRESHOLD``;
    ``revenue`` is paid, not cancelled order items of the shop x category's products.
    """

    shop = rollup_fk(Shop)
    category = rollup_fk(Category)
    slot = models.PositiveSmallIntegerField()
    products = models.BigIntegerField(default=0, db_default=0)
    price_sum = models.BigIntegerField(default=0, db_default=0)
    stock_sum = models.BigIntegerField(default=0, db_default=0)
    low_stock = models.BigIntegerField(default=0, db_default=0)
    out_of_stock = models.BigIntegerField(default=0, db_default=0)
    revenue = models.BigIntegerField(default=0, db_default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["shop", "category", "slot"], name="categoryrollup_key")
        ]

    def __str__(self) -> str:
        return f"shop {self.shop_id} x category {self.category_id} [{self.slot}]"


class LedgerFold(models.Model):
    """How much of the stock ledger CategoryRollup holds (a single row).

    Stock changes are not written to the rollup by the hot adjustment statement: the
    ledger row it appends anyway is the delta. Ledger rows up to ``folded_id`` are in
    CategoryRollup's stock columns; readers add the rows after it (the unfolded tail,
    ``store.selectors.rollups.stock_tail``). ``candidate_id`` is the next fold's end,
    safe once the writing transactions of this database that were running when it was
    read (``candidate_waits_for``, their ids) have ended: PostgreSQL ids are drawn
    before commit, so a lower id can still commit after a higher one.
    """

    id = models.PositiveSmallIntegerField(primary_key=True, default=1)
    folded_id = models.BigIntegerField(default=0)
    candidate_id = models.BigIntegerField(default=0)
    candidate_waits_for = models.JSONField(default=list)

    def __str__(self) -> str:
        return f"ledger folded to {self.folded_id}"


class ProductSales(models.Model):
    """Net units and revenue of one product per hour of paid time (UTC)."""

    product = rollup_fk(Product)
    hour = models.DateTimeField()
    units = models.BigIntegerField(default=0, db_default=0)
    revenue = models.BigIntegerField(default=0, db_default=0)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["product", "hour"], name="productsales_key")]
        indexes = [
            # Trending reads a window of hours: an index-only range scan.
            models.Index(
                fields=["hour"], include=["product", "revenue", "units"], name="productsales_hour"
            )
        ]

    def __str__(self) -> str:
        return f"product {self.product_id} at {self.hour:%Y-%m-%d %H}:00"


class ProductRevenue(models.Model):
    """Net lifetime revenue per product, and where that revenue is attributed.

    ``shop`` and ``category`` follow the product (a move updates them under this
    row's lock); payments read them back from this row, so a payment racing a
    move credits the category the move left the revenue in.
    """

    product = models.OneToOneField(
        Product,
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        primary_key=True,
        related_name="+",
    )
    shop = rollup_fk(Shop)
    category = rollup_fk(Category)
    units = models.BigIntegerField(default=0, db_default=0)
    revenue = models.BigIntegerField(default=0, db_default=0)

    class Meta:
        indexes = [models.Index(fields=["category", "-revenue"], name="productrevenue_rank")]

    def __str__(self) -> str:
        return f"product {self.product_id}: {self.revenue}"


class ShopRollup(models.Model):
    """Open orders and the last payment per shop (summed / maxed over slots)."""

    shop = rollup_fk(Shop)
    slot = models.PositiveSmallIntegerField()
    open_orders = models.BigIntegerField(default=0, db_default=0)
    last_paid_at = models.DateTimeField(null=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["shop", "slot"], name="shoprollup_key")]

    def __str__(self) -> str:
        return f"shop {self.shop_id} [{self.slot}]"


class ShopSales(models.Model):
    """Net paid orders and revenue per shop per hour of paid time (UTC)."""

    shop = rollup_fk(Shop)
    hour = models.DateTimeField()
    slot = models.PositiveSmallIntegerField()
    orders = models.BigIntegerField(default=0, db_default=0)
    revenue = models.BigIntegerField(default=0, db_default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["shop", "hour", "slot"], name="shopsales_key")
        ]
        indexes = [models.Index(fields=["hour"], name="shopsales_hour")]

    def __str__(self) -> str:
        return f"shop {self.shop_id} at {self.hour:%Y-%m-%d %H}:00 [{self.slot}]"


class ProductWindowSales(models.Model):
    """Net units and revenue per product over a rolling window of whole hours.

    Holds the sum of ``ProductSales`` from its window's ``SalesWindow.start`` on:
    payments add to it at once, and ``sales_windows_advance`` takes out the hours
    that fell out of the window. Trending reads its top rows from an index.
    """

    window_hours = models.PositiveSmallIntegerField()
    product = rollup_fk(Product)
    units = models.BigIntegerField(default=0, db_default=0)
    revenue = models.BigIntegerField(default=0, db_default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["window_hours", "product"], name="windowsales_key")
        ]
        indexes = [
            models.Index(fields=["window_hours", "-revenue", "product"], name="windowsales_top")
        ]

    def __str__(self) -> str:
        return f"product {self.product_id} over {self.window_hours} h"


class SalesWindow(models.Model):
    """Where a rolling window's rows start: the first hour they still hold."""

    window_hours = models.PositiveSmallIntegerField(primary_key=True)
    start = models.DateTimeField()

    def __str__(self) -> str:
        return f"{self.window_hours} h from {self.start:%Y-%m-%d %H}:00"


# StoreHour's level columns, in the order the rollup code keeps them.
STORE_HOUR_COLUMNS = ("products", "units", "low_stock", "out_of_stock", "open_orders")


class StoreHour(models.Model):
    """How the store-wide levels moved in one hour (UTC), summed over slots.

    Each column is the hour's net change of a headline level: products, units in
    stock, low stock (at ``STOREOPS_LOW_STOCK_THRESHOLD``), out of stock, open
    orders. The rows of all hours add up to today's levels; the headline walks back
    from those through the last 48 hours' rows (``store.selectors.overview``). Kept
    by the writes that keep CategoryRollup and ShopRollup, at the hour of the write;
    stock changes by the ledger fold, at the hour of each ledger row (readers add
    the unfolded tail).
    """

    hour = models.DateTimeField()
    slot = models.PositiveSmallIntegerField()
    products = models.BigIntegerField(default=0, db_default=0)
    units = models.BigIntegerField(default=0, db_default=0)
    low_stock = models.BigIntegerField(default=0, db_default=0)
    out_of_stock = models.BigIntegerField(default=0, db_default=0)
    open_orders = models.BigIntegerField(default=0, db_default=0)

    class Meta:
        # The key's index serves the headline's range of hours too.
        constraints = [models.UniqueConstraint(fields=["hour", "slot"], name="storehour_key")]

    def __str__(self) -> str:
        return f"store at {self.hour:%Y-%m-%d %H}:00 [{self.slot}]"
