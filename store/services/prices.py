"""Bulk price changes: one atomic UPDATE in integer arithmetic, versions bumped, audited."""

from __future__ import annotations

import logging
from dataclasses import asdict

from django.db.models import BigIntegerField, F
from django.db.models.expressions import CombinedExpression
from django.db.models.functions import Cast
from django.utils import timezone

from store.caching import bump
from store.exceptions import NothingToChange, StockLimitExceeded
from store.models import Product
from store.selectors.prices import PriceFilter  # a selector too: the preview reads with it
from store.services.actors import Actor, actor_ref
from store.services.outbox import TOPIC_PRICE_CHANGED, outbox_enqueue
from store.services.retry import atomic_with_retry
from store.services.rollups import price_change_rollup
from store.services.stock import MAX_UNITS

logger = logging.getLogger(__name__)

MIN_PERCENT = -90
MAX_PERCENT = 100


def new_price_expression(percent: int) -> CombinedExpression:
    """round(price * (100 + percent) / 100) half up, in 64-bit integers on every backend."""
    scaled = Cast(F("price"), BigIntegerField()) * (100 + percent) + 50
    return scaled / 100


def price_change(*, filters: PriceFilter, percent: int, actor: Actor) -> int:
    """Raise or lower every matching price by ``percent``; returns how many changed."""
    if not MIN_PERCENT <= percent <= MAX_PERCENT or percent == 0:
        raise ValueError(f"percent must be in [{MIN_PERCENT}, {MAX_PERCENT}] and not 0")

    def apply() -> int:
        matching = Product.objects.filter(filters.q())
        # The largest price decides whether the new value still fits the column.
        top = matching.order_by("-price").values_list("price", flat=True).first()
        if top is None:
            raise NothingToChange()
        if (top * (100 + percent) + 50) // 100 > MAX_UNITS:
            raise StockLimitExceeded(maximum=MAX_UNITS)
        rollup = price_change_rollup(matching, new_price_expression(percent))
        changed = matching.update(
            price=new_price_expression(percent),
            version=F("version") + 1,
            updated_at=timezone.now(),
        )
        outbox_enqueue(
            topic=TOPIC_PRICE_CHANGED,
            key="",
            payload={
                "filters": asdict(filters),
                "percent": percent,
                "changed": changed,
                "actor_id": actor_ref(actor),
            },
        )
        logger.info(
            "prices changed by %+d%% on %d products by user %s", percent, changed, actor_ref(actor)
        )
        rollup.apply()
        bump("catalog")
        return changed

    return atomic_with_retry(apply)
