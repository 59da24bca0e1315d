"""Small, explicit builders for test data (no factory library needed)."""

from __future__ import annotations

import itertools
from datetime import datetime
from decimal import Decimal

from django.utils import timezone

from store.models import Category, Order, OrderItem, Product, Shop

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
    return Product.objects.create(
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
    )
    OrderItem.objects.bulk_create(
        OrderItem(order=made, product=p, quantity=q, unit_price=p.price) for p, q in lines
    )
    return made
