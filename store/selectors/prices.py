"""What a bulk price change would touch, for its confirmation step."""

from __future__ import annotations

from dataclasses import dataclass

from django.db.models import Count, Max, Min, Q

from store.models import Product


@dataclass(frozen=True)
class PriceFilter:
    """Which products a bulk price change touches (here, as selectors never import services)."""

    shop_id: int | None = None
    category_id: int | None = None

    def q(self) -> Q:
        q = Q()
        if self.shop_id is not None:
            q &= Q(shop_id=self.shop_id)
        if self.category_id is not None:
            q &= Q(category_id=self.category_id)
        return q


@dataclass(frozen=True)
class PricePreview:
    count: int
    min_price: int | None
    max_price: int | None


def price_change_preview(*, filters: PriceFilter) -> PricePreview:
    totals = Product.objects.filter(filters.q()).aggregate(
        count=Count("pk"), low=Min("price"), high=Max("price")
    )
    return PricePreview(count=totals["count"], min_price=totals["low"], max_price=totals["high"])
