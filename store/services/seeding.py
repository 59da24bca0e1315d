"""Deterministic demo data, loaded in bulk.

The data set is generated in fixed-size chunks, each from its own RNG seeded by
``(seed, table, chunk)``, so the same seed always gives the same rows and memory
stays bounded by one chunk whatever the size. Rows reach the database through
``COPY ... FROM STDIN`` on PostgreSQL and batched ``executemany`` elsewhere.

Orders are history: the seed is the catalog's starting snapshot, so seeded order
items do not move stock and the ledger starts empty (stock == initial_stock).
"""

from __future__ import annotations

import json
import math
import random
from array import array
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from django.db import transaction
from django.utils import timezone

from store.models import (
    Category,
    CustomerEvent,
    CustomerProfile,
    Order,
    OrderItem,
    Product,
    Shop,
)
from store.services.bulk_load import BulkSink
from store.services.rollup_rebuild import rollups_rebuild
from store.sharding import bucket_for_user, shard_for_bucket

CHUNK = 20_000
ORDER_DAYS = 90

SHOP_NAMES = [
    "Northwind",
    "Harbor & Co",
    "Blue Fern",
    "Copper Kettle",
    "Atlas Outfitters",
    "Juniper",
    "Maple Street",
    "Orchid Lane",
    "Granite Goods",
    "Silver Birch",
    "Tidewater",
    "Red Canyon",
    "Lumen",
    "Saffron",
    "Evergreen",
    "Kestrel",
]
CATEGORY_NAMES = [
    "Electronics",
    "Books",
    "Kitchen",
    "Garden",
    "Toys",
    "Sports",
    "Beauty",
    "Grocery",
    "Office",
    "Pets",
    "Outdoor",
    "Music",
    "Tools",
    "Health",
    "Fashion",
    "Home Decor",
    "Automotive",
    "Baby",
    "Games",
    "Crafts",
]
ADJECTIVES = [
    "Classic",
    "Compact",
    "Deluxe",
    "Eco",
    "Ultra",
    "Smart",
    "Vintage",
    "Premium",
    "Mini",
    "Rugged",
    "Silent",
    "Swift",
    "Bright",
    "Cozy",
    "Bold",
    "Nimble",
]
NOUNS = [
    "Lamp",
    "Kettle",
    "Backpack",
    "Speaker",
    "Notebook",
    "Blender",
    "Jacket",
    "Drone",
    "Planter",
    "Puzzle",
    "Headphones",
    "Skillet",
    "Tent",
    "Watch",
    "Mug",
    "Charger",
    "Candle",
    "Helmet",
    "Keyboard",
    "Scarf",
]
# Price multipliers per shop: two premium shops in every eight.
SHOP_PRICE_LEVELS = [1.0, 1.4, 0.8, 12.0, 1.1, 2.5, 0.9, 9.0]
FIRST = ["Ada", "Ben", "Cleo", "Dev", "Eli", "Fay", "Gus", "Hana", "Ivo", "Jun", "Kai", "Lea"]
LAST = ["Ames", "Brook", "Cruz", "Dale", "Ekon", "Frey", "Gray", "Holt", "Ito", "Jain"]
EVENT_KINDS = ["view", "view", "view", "add_to_cart", "wishlist", "purchase"]


@dataclass(frozen=True)
class SeedPlan:
    shops: int = 8
    categories: int = 12
    products: int = 2_000
    orders: int = 5_000
    customers: int = 500
    seed: int = 42
    # How far back orders go. Beyond the default 90 days the store has simply been
    # open longer: the last 90 days look as they do with 90, older orders are spread
    # evenly over the rest (same catalogue, a longer history).
    history_days: int = ORDER_DAYS
    # Timestamps are relative to this instant; pass it to reproduce a data set exactly.
    now: datetime = field(
        default_factory=lambda: timezone.now().replace(minute=0, second=0, microsecond=0)
    )

    def __post_init__(self) -> None:
        for name in ("shops", "categories", "products", "customers", "history_days"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be at least 1")
        if self.orders < 0:
            raise ValueError("--orders must not be negative")


@dataclass
class SeedResult:
    counts: dict[str, int] = field(default_factory=dict)


Progress = Callable[[str, int, int], None]


def _quiet(label: str, done: int, total: int) -> None:
    return None


def _rng(plan: SeedPlan, table: str, chunk: int) -> random.Random:
    return random.Random(f"{plan.seed}:{table}:{chunk}")


def _chunks(total: int) -> Iterable[tuple[int, int, int]]:
    """(chunk index, first 1-based id, last id + 1)."""
    for index, start in enumerate(range(0, total, CHUNK)):
        yield index, start + 1, min(start + CHUNK, total) + 1


def catalog_is_empty() -> bool:
    """Seeding writes explicit ids, so it needs every catalog table empty."""
    return not any(
        model.objects.using("default").exists() for model in (Shop, Category, Product, Order)
    )


def seed_demo(*, plan: SeedPlan, progress: Progress = _quiet) -> SeedResult:
    """Load a whole data set into empty tables; raises if the catalog has products."""
    if not catalog_is_empty():
        raise ValueError("The catalog already has data: seed into an empty database.")
    result = SeedResult()
    primary = BulkSink("default")
    with transaction.atomic(using="default"):
        result.counts["shops"] = primary.write(
            Shop._meta.db_table, ["id", "name", "slug", "created_at"], _shops(plan)
        )
        result.counts["categories"] = primary.write(
            Category._meta.db_table, ["id", "name", "slug"], _categories(plan)
        )
        prices = array("I")
        lifetime = array("Q", bytes(8 * (plan.customers + 1)))
        with primary.bulk_load([Product, Order, OrderItem]):
            result.counts["products"] = _load_products(plan, primary, prices, progress)
            result.counts["orders"], result.counts["order items"] = _load_orders(
                plan, primary, prices, lifetime, progress
            )
        primary.reset_sequences([Shop, Category, Product, Order, OrderItem])
    result.counts["customers"], result.counts["customer events"] = _load_customers(
        plan, lifetime, progress
    )
    # The panels read rollups: fill them from what was just loaded.
    rollups_rebuild(
        batch_products=None,  # nothing else writes yet: whole tables, one statement each
        progress=lambda name, done, total: progress("rollups", done, total),
    )
    return result


def _shops(plan: SeedPlan) -> Iterable[tuple[Any, ...]]:
    for n in range(1, plan.shops + 1):
        base = SHOP_NAMES[(n - 1) % len(SHOP_NAMES)]
        suffix = "" if n <= len(SHOP_NAMES) else f" {n // len(SHOP_NAMES) + 1}"
        yield n, base + suffix, f"shop-{n}", plan.now - timedelta(days=400 - n)


def _categories(plan: SeedPlan) -> Iterable[tuple[Any, ...]]:
    for n in range(1, plan.categories + 1):
        base = CATEGORY_NAMES[(n - 1) % len(CATEGORY_NAMES)]
        suffix = "" if n <= len(CATEGORY_NAMES) else f" {n // len(CATEGORY_NAMES) + 1}"
        yield n, base + suffix, f"category-{n}"


PRODUCT_COLUMNS = [
    "id",
    "shop_id",
    "category_id",
    "name",
    "sku",
    "price",
    "initial_stock",
    "stock",
    "rating",
    "is_public",
    "version",
    "created_at",
    "updated_at",
]


def _load_products(plan: SeedPlan, sink: BulkSink, prices: array, progress: Progress) -> int:
    total = 0
    for chunk, first, stop in _chunks(plan.products):
        rng = _rng(plan, "products", chunk)
        rows = []
        for pk in range(first, stop):
            shop = 1 + int(plan.shops * rng.random() ** 1.5)
            # Skewed: most products are cheap, a long tail is expensive (cents); some
            # shops are premium, so shop x category averages spread widely.
            level = SHOP_PRICE_LEVELS[(shop - 1) % len(SHOP_PRICE_LEVELS)]
            price = min(2_000_000, max(99, int(rng.lognormvariate(7.8, 1.0) * level)))
            roll = rng.random()
            stock = rng.randint(0, 5) if roll < 0.06 else rng.randint(6, 400)
            created = plan.now - timedelta(seconds=rng.randint(0, 365 * 86400))
            prices.append(price)
            rows.append(
                (
                    pk,
                    shop,
                    1 + int(plan.categories * rng.random() ** 1.3),
                    f"{rng.choice(ADJECTIVES)} {rng.choice(NOUNS)} {pk}",
                    f"SKU-{pk:08d}",
                    price,
                    stock,
                    stock,
                    Decimal(rng.randint(0, 500)) / 100,
                    rng.random() < 0.9,
                    1,
                    created,
                    created,
                )
            )
        total += sink.write(Product._meta.db_table, PRODUCT_COLUMNS, rows)
        progress("products", total, plan.products)
    return total


def _load_orders(
    plan: SeedPlan, sink: BulkSink, prices: array, lifetime: array, progress: Progress
) -> tuple[int, int]:
    orders_total = items_total = 0
    item_id = 1
    n_products = len(prices)
    days = plan.history_days
    for chunk, first, stop in _chunks(plan.orders):
        rng = _rng(plan, "orders", chunk)
        orders, items = [], []
        for pk in range(first, stop):
            customer = 1 + int(plan.customers * rng.random() ** 2)
            # More orders recently: the age skews towards today. A longer history
            # puts a share 90/days in the recent 90 days with that same skew (so
            # they match the 90-day data set) and spreads the rest evenly before it;
            # the default plan draws exactly the numbers it always drew.
            if days <= ORDER_DAYS or rng.random() < ORDER_DAYS / days:
                age = min(days, ORDER_DAYS) * 86400 * rng.random() ** 1.6
            else:
                age = (ORDER_DAYS + (days - ORDER_DAYS) * rng.random()) * 86400
            created = plan.now - timedelta(seconds=int(age))
            roll = rng.random()
            paid = roll < 0.72
            # History never lies in the future: a just-placed order is cancelled "now".
            cancel_at = min(created + timedelta(hours=2), plan.now)
            cancelled = cancel_at if 0.72 <= roll < 0.75 else None
            # An order placed just now is not paid in the future.
            paid_at = (
                min(plan.now, created + timedelta(minutes=rng.randint(1, 600))) if paid else None
            )
            total = 0
            lines = 1 + int(rng.random() ** 1.7 * 5)
            for _ in range(lines):
                # Popular products sell more: a power law over product ids.
                product = 1 + int(n_products * rng.random() ** 3)
                quantity = 1 + int(rng.random() ** 4 * 4)
                unit_price = prices[product - 1]
                total += unit_price * quantity
                items.append((item_id, pk, product, quantity, unit_price))
                item_id += 1
            if paid:
                lifetime[customer] += total
            orders.append(
                (
                    pk,
                    customer,
                    1 + int(plan.shops * rng.random() ** 1.5),
                    paid,
                    paid_at,
                    cancelled,
                    1,
                    created,
                    total,
                    lines,
                )
            )
        orders_total += sink.write(
            Order._meta.db_table,
            [
                "id",
                "customer_id",
                "shop_id",
                "paid",
                "paid_at",
                "cancelled_at",
                "version",
                "created_at",
                "total",
                "item_count",
            ],
            orders,
        )
        items_total += sink.write(
            OrderItem._meta.db_table,
            ["id", "order_id", "product_id", "quantity", "unit_price"],
            items,
        )
        progress("orders", orders_total, plan.orders)
    return orders_total, items_total


def _load_customers(plan: SeedPlan, lifetime: array, progress: Progress) -> tuple[int, int]:
    by_shard: dict[str, tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]] = {}
    profiles_total = events_total = 0

    def flush() -> None:
        nonlocal profiles_total, events_total
        for alias, (profiles, events) in by_shard.items():
            sink = BulkSink(alias)
            with transaction.atomic(using=alias):
                profiles_total += sink.write(
                    CustomerProfile._meta.db_table,
                    ["user_id", "bucket", "name", "email", "lifetime_value", "created_at"],
                    profiles,
                )
                events_total += sink.write(
                    CustomerEvent._meta.db_table,
                    ["user_id", "bucket", "kind", "product_id", "payload", "created_at"],
                    events,
                )
            profiles.clear()
            events.clear()

    for chunk, first, stop in _chunks(plan.customers):
        rng = _rng(plan, "customers", chunk)
        for user_id in range(first, stop):
            bucket = bucket_for_user(user_id)
            alias = shard_for_bucket(bucket)
            profiles, events = by_shard.setdefault(alias, ([], []))
            first_name, last_name = rng.choice(FIRST), rng.choice(LAST)
            joined = plan.now - timedelta(days=rng.randint(1, 700))
            profiles.append(
                (
                    user_id,
                    bucket,
                    f"{first_name} {last_name}",
                    f"{first_name.lower()}.{user_id}@example.com",
                    lifetime[user_id],
                    joined,
                )
            )
            for _ in range(rng.randint(0, 6)):
                product = 1 + int(plan.products * rng.random() ** 3)
                seconds = int(ORDER_DAYS * 86400 * rng.random() ** 3)
                events.append(
                    (
                        user_id,
                        bucket,
                        rng.choice(EVENT_KINDS),
                        product,
                        json.dumps({"source": "seed"}),
                        plan.now - timedelta(seconds=seconds),
                    )
                )
        flush()
        progress("customers", min(stop - 1, plan.customers), plan.customers)
    return profiles_total, events_total


def estimated_rows(plan: SeedPlan) -> int:
    """Rough total, for progress output: orders average about 2.3 items."""
    return plan.products + plan.orders + math.ceil(plan.orders * 2.3) + plan.customers * 4
