"""Shop activity: when each shop last sold, whether it sells, what is open."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from django.db.models import Count, Exists, F, IntegerField, OuterRef, Subquery
from django.db.models.functions import Coalesce

from store.models import Order, Product, Shop


@dataclass(frozen=True)
class ShopActivity:
    shop_id: int
    name: str
    last_paid_at: datetime | None
    has_public_products: bool
    open_orders: int


def shop_activity() -> list[ShopActivity]:
    """Every shop, most recently active first (one query, correlated subqueries).

    Subqueries instead of joins: joining orders and products at once would
    multiply rows, and Exists stops at the first public product.
    """
    last_paid = (
        Order.objects.filter(shop=OuterRef("pk"), paid=True)
        .order_by("-paid_at")
        .values("paid_at")[:1]
    )
    open_count = (
        Order.objects.open()
        .filter(shop=OuterRef("pk"))
        .values("shop")
        .annotate(n=Count("pk"))
        .values("n")
    )
    shops = Shop.objects.annotate(
        last_paid_at=Subquery(last_paid),
        has_public_products=Exists(Product.objects.public().filter(shop=OuterRef("pk"))),
        open_orders=Coalesce(Subquery(open_count, output_field=IntegerField()), 0),
    ).order_by(F("last_paid_at").desc(nulls_last=True), "name")
    return [
        ShopActivity(
            shop_id=s.pk,
            name=s.name,
            last_paid_at=s.last_paid_at,
            has_public_products=s.has_public_products,
            open_orders=s.open_orders,
        )
        for s in shops
    ]
