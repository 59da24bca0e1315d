"""Small, explicit builders for test data (no factory library needed)."""

from __future__ import annotations

import itertools
from datetime import datetime
from decimal import Decimal

from django.utils import timezone

from store.models import Category, Order, OrderItem, Product, Shop
from store.services import rollups

_seq = itertools.count(1)


def shop(name: str = "") -> Shop:
    n = next(_seq)
    return Shop.objects.create(name=name or f"Shop {n}", slug=f"shop-{n}")


def category(name: str = "") -> Category:
    n = next(_seq)
    return Category.objects.create(name=name or f"Category {n}", slug=f"category-{n}")


def product(
    *,
    shop: Shop,
    category: Category,
    price: int = 1000,
    stock: int = 10,
    name: str = "",
    is_public: bool = True,
    rating: str = "4.00",
) -> Product:
    n = next(_seq)
    made = Product.objects.create(
        shop=shop,
        category=category,
        name=name or f"Product {n}",
        sku=f"T-{n:08d}",
        price=price,
        stock=stock,
        initial_stock=stock,
        is_public=is_public,
        rating=Decimal(rating),
    )
    rollups.product_added(made)
    return made


def order(
    *,
    shop: Shop,
    lines: list[tuple[Product, int]],
    paid: bool = False,
    created_at: datetime | None = None,
    customer_id: int = 1,
) -> Order:
    created_at = created_at or timezone.now()
    made = Order.objects.create(
        shop=shop,
        customer_id=customer_id,
        paid=paid,
        created_at=created_at,
        paid_at=created_at if paid else None,
        total=sum(p.price * q for p, q in lines),
        item_count=len(lines),
    )
    OrderItem.objects.bulk_create(
        OrderItem(order=made, product=p, quantity=q, unit_price=p.price) for p, q in lines
    )
    rollups.order_added(made)
    return made


def orders_whose_totals_disagree_with_their_items() -> list[int]:
    """Ids of orders whose stored total or item count is not what their items say."""
    from django.db.models import Count, F, Sum
    from django.db.models.functions import Coalesce

    return list(
        Order.objects.annotate(
            items_total=Coalesce(Sum(F("items__quantity") * F("items__unit_price")), 0),
            items_n=Count("items"),
        )
        .exclude(total=F("items_total"), item_count=F("items_n"))
        .values_list("pk", flat=True)
    )
