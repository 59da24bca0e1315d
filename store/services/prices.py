"""Bulk price changes: one atomic UPDATE in integer arithmetic, versions bumped, audited."""

from __future__ import annotations

import logging
from dataclasses import asdict

from django.db import connections
from django.db.models import BigIntegerField, F, QuerySet
from django.db.models.expressions import CombinedExpression
from django.db.models.functions import Cast
from django.utils import timezone

from store.caching import bump
from store.exceptions import NothingToChange, StockLimitExceeded
from store.models import ROLLUP_SLOTS, Product
from store.selectors.prices import PriceFilter  # a selector too: the preview reads with it
from store.services.actors import Actor, actor_ref
from store.services.outbox import TOPIC_PRICE_CHANGED, outbox_enqueue
from store.services.retry import atomic_with_retry
from store.services.rollups import RollupDeltas, price_change_rollup
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
        changed, rollup = _update_prices(matching, percent)
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


def _update_prices(matching: QuerySet[Product], percent: int) -> tuple[int, RollupDeltas]:
    """Apply ``percent`` to the matching products; how many changed, and the price
    deltas per shop x category.

    On PostgreSQL this is one statement: a sub-select locks the matching rows and the
    UPDATE changes those rows, returning old and new prices. Counting the deltas in
    one statement and updating in another let a product moved into the filter by an
    edit committing between the two be updated without being counted (the rollup's
    price sum drifted under concurrent moves). SQLite has a single writer, so nothing
    moves between two statements there.
    """
    connection = connections["default"]
    if connection.vendor != "postgresql":
        rollup = price_change_rollup(matching, new_price_expression(percent))
        changed = matching.update(
            price=new_price_expression(percent),
            version=F("version") + 1,
            updated_at=timezone.now(),
        )
        return changed, rollup
    locked = matching.select_for_update().order_by("pk").values("id", "price")
    locked_sql, params = locked.query.sql_with_params()
    table = Product._meta.db_table
    with connection.cursor() as cursor:
        # The new price is new_price_expression's: round half up in 64-bit integers.
        cursor.execute(
            f"WITH changed AS (UPDATE {table} p "  # noqa: S608
            "SET price = (CAST(o.price AS bigint) * %s + 50) / 100, "
            "version = p.version + 1, updated_at = %s "
            f"FROM ({locked_sql}) o WHERE p.id = o.id "
            "RETURNING p.shop_id, p.category_id, p.id %% %s AS slot, p.price - o.price AS delta) "
            "SELECT shop_id, category_id, slot, SUM(delta), COUNT(*) FROM changed "
            "GROUP BY shop_id, category_id, slot",
            [100 + percent, timezone.now(), *params, ROLLUP_SLOTS],
        )
        rows = cursor.fetchall()
    rollup = RollupDeltas()
    for shop_id, category_id, slot, delta, _ in rows:
        rollup.categories[(shop_id, category_id, slot)][1] += int(delta)
    return sum(row[4] for row in rows), rollup
