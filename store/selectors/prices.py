"""What a bulk price change would touch, for its confirmation step."""

from __future__ import annotations

from dataclasses import dataclass

from django.db.models import Count, Max, Min

from store.models import Product
from store.services.prices import PriceFilter


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
