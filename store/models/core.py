"""The store's own rows on the primary: catalog, orders, the stock ledger,
idempotency keys and the outbox.

Money is stored as integer minor units (cents) so no float ever reaches a column.
"""

from __future__ import annotations

import uuid
from typing import Any

from django.conf import settings
from django.db import models
from django.db.models import Q

# The partial index covers every threshold ops staff normally pick (the default is 5).
LOW_STOCK_INDEX_MAX = 20


class Console(models.Model):
    """Holds the console-wide permission; no table behind it."""

    class Meta:
        managed = False
        default_permissions = ()
        permissions = [("view_dashboard", "Can see the ops dashboard")]

    def __str__(self) -> str:
        return "Store Ops Console"


class Shop(models.Model):
    name = models.CharField(max_length=120)
    slug = models.SlugField(max_length=120, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Category(models.Model):
    name = models.CharField(max_length=120)
    slug = models.SlugField(max_length=120, unique=True)

    class Meta:
        ordering = ["name"]
        verbose_name_plural = "categories"

    def __str__(self) -> str:
        return self.name


class ProductQuerySet(models.QuerySet["Product"]):
    def public(self) -> ProductQuerySet:
        return self.filter(is_public=True)

    def low_stock(self, threshold: int) -> ProductQuerySet:
        if threshold <= LOW_STOCK_INDEX_MAX:
            # The partial index's own condition, spelled out: SQLite uses a partial
            # index only when the query names its WHERE term (PostgreSQL infers it).
            return self.filter(stock__lte=threshold).filter(stock__lte=LOW_STOCK_INDEX_MAX)
        return self.filter(stock__lte=threshold)


class Product(models.Model):
    shop = models.ForeignKey(Shop, on_delete=models.PROTECT, related_name="products")
    category = models.ForeignKey(Category, on_delete=models.PROTECT, related_name="products")
    name = models.CharField(max_length=200)
    sku = models.CharField(max_length=32, unique=True)
    price = models.PositiveIntegerField(help_text="Price in cents.")
    # stock == initial_stock + sum(ledger deltas), always; services keep it so.
    initial_stock = models.PositiveIntegerField(default=0)
    stock = models.PositiveIntegerField(default=0)
    rating = models.DecimalField(max_digits=3, decimal_places=2, default=0)
    is_public = models.BooleanField(default=True)
    # Optimistic concurrency: every write bumps it; a conditional UPDATE checks it.
    version = models.PositiveIntegerField(default=1)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = ProductQuerySet.as_manager()

    class Meta:
        ordering = ["pk"]
        permissions = [
            ("adjust_stock", "Can adjust stock"),
            ("change_price", "Can change prices"),
        ]
        indexes = [
            models.Index(fields=["shop", "is_public", "price"], name="product_shop_public_price"),
            models.Index(fields=["category", "price"], name="product_category_price"),
            # (stock, id): the low-stock list's own order, and counts from the index alone.
            models.Index(
                fields=["stock", "id"],
                name="product_low_stock",
                condition=Q(stock__lte=LOW_STOCK_INDEX_MAX),
            ),
        ]
        constraints = [
            models.CheckConstraint(condition=Q(stock__gte=0), name="product_stock_gte_0"),
            models.CheckConstraint(condition=Q(price__gte=0), name="product_price_gte_0"),
            models.CheckConstraint(
                condition=Q(rating__gte=0) & Q(rating__lte=5), name="product_rating_0_5"
            ),
        ]

    def __str__(self) -> str:
        return self.name


class OrderQuerySet(models.QuerySet["Order"]):
    def paid(self) -> OrderQuerySet:
        return self.filter(paid=True)

    def open(self) -> OrderQuerySet:
        return self.filter(paid=False, cancelled_at__isnull=True)


class Order(models.Model):
    # A plain id: customers live on the shards, and there are no cross-database FKs.
    customer_id = models.PositiveBigIntegerField(db_index=True, verbose_name="customer (user id)")
    shop = models.ForeignKey(Shop, on_delete=models.PROTECT, related_name="orders")
    paid = models.BooleanField(default=False)
    paid_at = models.DateTimeField(null=True, blank=True)
    cancelled_at = models.DateTimeField(null=True, blank=True)
    version = models.PositiveIntegerField(default=1)
    created_at = models.DateTimeField(db_index=True)
    # Stored, not summed per page: sorting 830k orders by a computed total took
    # about 3 s. Written once by whoever creates the items (order_place, the seed);
    # items never change after that, so the two cannot drift.
    total = models.PositiveBigIntegerField(default=0, help_text="cents; sum of the items")
    item_count = models.PositiveIntegerField(default=0)

    objects = OrderQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-pk"]
        permissions = [
            ("mark_order_paid", "Can mark orders paid"),
            ("cancel_order", "Can cancel orders (restocks every line)"),
        ]
        indexes = [
            models.Index(fields=["paid", "created_at"], name="order_paid_created"),
            models.Index(fields=["shop", "paid", "created_at"], name="order_shop_paid_created"),
            # The orders table sorts by these.
            models.Index(fields=["total"], name="order_total"),
            models.Index(fields=["item_count"], name="order_item_count"),
        ]

    def __str__(self) -> str:
        return f"Order #{self.pk}"


class OrderItem(models.Model):
    order = models.ForeignKey(Order, on_delete=models.CASCADE, related_name="items")
    product = models.ForeignKey(Product, on_delete=models.PROTECT, related_name="order_items")
    quantity = models.PositiveIntegerField()
    # Snapshot at order time: later price changes never rewrite history.
    unit_price = models.PositiveIntegerField(help_text="Unit price in cents at order time.")

    class Meta:
        ordering = ["pk"]
        constraints = [
            models.CheckConstraint(condition=Q(quantity__gt=0), name="orderitem_quantity_gt_0"),
            models.CheckConstraint(condition=Q(unit_price__gte=0), name="orderitem_price_gte_0"),
        ]

    def __str__(self) -> str:
        return f"{self.quantity} x {self.product_id}"


def rollup_fk(model: type[models.Model], **options: Any) -> Any:
    """A key for summing by, not for integrity: no database FK (an FK check would
    share-lock the shop and category rows on every insert); the ORM still joins."""
    return models.ForeignKey(
        model,
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        db_index=False,
        related_name="+",
        **options,
    )


class StockMovement(models.Model):
    """One row per stock change: the ledger that stock must always agree with."""

    class Method(models.TextChoices):
        ADJUST = "adjust", "Locked adjustment"
        OPTIMISTIC = "optimistic", "Optimistic set"
        ORDER = "order", "Order placed"
        CANCEL = "cancel", "Order cancelled"
        ADMIN = "admin", "Admin"

    # No index of its own: movement_product_created (product, created_at) serves
    # product lookups, and every adjustment would pay to maintain a second one.
    product = models.ForeignKey(
        Product, on_delete=models.PROTECT, related_name="movements", db_index=False
    )
    delta = models.IntegerField()
    stock_before = models.PositiveIntegerField()
    stock_after = models.PositiveIntegerField()
    reason = models.CharField(max_length=200, blank=True)
    method = models.CharField(max_length=16, choices=Method.choices)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    order = models.ForeignKey(
        Order, null=True, blank=True, on_delete=models.PROTECT, related_name="movements"
    )
    idempotency_key = models.CharField(max_length=64, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    # Where the product was when its stock moved. The ledger is the stock rollup's
    # delta log: stock_ledger_fold adds its rows to CategoryRollup by these keys, so a
    # later move of the product cannot send an unfolded change to the wrong category.
    # Empty on rows written before the ledger was folded (all of them folded already).
    shop = rollup_fk(Shop, null=True)
    category = rollup_fk(Category, null=True)

    class Meta:
        ordering = ["-created_at", "-pk"]
        indexes = [models.Index(fields=["product", "created_at"], name="movement_product_created")]
        constraints = [
            models.CheckConstraint(
                condition=Q(stock_after=models.F("stock_before") + models.F("delta")),
                name="movement_after_is_before_plus_delta",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.product_id} {self.delta:+d}"


class IdempotencyKey(models.Model):
    """A client-chosen key per action POST: the first result is stored and replayed."""

    key = models.CharField(max_length=64)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE)
    fingerprint = models.CharField(max_length=64, help_text="SHA-256 of the request payload.")
    response_status = models.PositiveSmallIntegerField(null=True, blank=True)
    response_body = models.TextField(blank=True)
    response_location = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    completed_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField(db_index=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "key"], name="idempotency_user_key"),
        ]

    def __str__(self) -> str:
        return self.key


class OutboxEvent(models.Model):
    """A side effect written in the same transaction as the change that causes it."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    topic = models.CharField(max_length=100)
    # Events with the same key (e.g. "product:42") are published in creation order.
    key = models.CharField(max_length=100, blank=True)
    payload = models.JSONField(default=dict)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    available_at = models.DateTimeField()
    attempts = models.PositiveIntegerField(default=0)
    claimed_until = models.DateTimeField(null=True, blank=True)
    claimed_by = models.CharField(max_length=100, blank=True)
    published_at = models.DateTimeField(null=True, blank=True)
    dead_lettered_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)

    class Meta:
        ordering = ["created_at"]
        indexes = [
            models.Index(
                fields=["available_at"],
                name="outbox_pending",
                condition=Q(published_at__isnull=True, dead_lettered_at__isnull=True),
            ),
            # The relay's per-key ordering check: "an older pending event of this key?"
            models.Index(
                fields=["key", "created_at"],
                name="outbox_pending_key",
                condition=Q(published_at__isnull=True, dead_lettered_at__isnull=True),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.topic} {self.id}"
