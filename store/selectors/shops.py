"""Shop activity: when each shop last sold, whether it sells, what is open."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from django.db.models import Exists, F, IntegerField, Max, OuterRef, Subquery, Sum
from django.db.models.functions import Coalesce

from store.models import Product, Shop, ShopRollup


@dataclass(frozen=True)
class ShopActivity:
    shop_id: int
    name: str
    last_paid_at: datetime | None
    has_public_products: bool
    open_orders: int


def shop_activity() -> list[ShopActivity]:
    """Every shop, most recently active first (one query, correlated subqueries).

    Subqueries instead of joins: the last payment and the open orders come from the
    shop rollup's counter slots (a handful of rows per shop, whatever the order
    history), and Exists stops at the first public product (an index probe).
    """
    slots = ShopRollup.objects.filter(shop=OuterRef("pk")).values("shop")
    shops = Shop.objects.annotate(
        last_paid_at=Subquery(slots.annotate(latest=Max("last_paid_at")).values("latest")),
        has_public_products=Exists(Product.objects.public().filter(shop=OuterRef("pk"))),
        open_orders=Coalesce(
            Subquery(slots.annotate(n=Sum("open_orders")).values("n")),
            0,
            output_field=IntegerField(),
        ),
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
