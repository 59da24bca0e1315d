"""The stock ledger's writer: one row per stock change, its event and its cache bumps.

Every service that moves stock (adjustments, optimistic sets, orders and their
cancellation) writes through ``ledger_record``, except the PostgreSQL adjustment,
which writes the same row and event in its one statement (store/services/stock.py).
"""

from __future__ import annotations

from store.caching import bump
from store.models import LOW_STOCK_INDEX_MAX, Product, StockMovement
from store.services.actors import Actor, actor_ref
from store.services.ledger_fold import ledger_written
from store.services.outbox import TOPIC_STOCK_CHANGED, outbox_enqueue


def ledger_record(
    *,
    product: Product,
    before: int,
    after: int,
    method: str,
    actor: Actor,
    reason: str,
    idempotency_key: str,
    order_id: int | None = None,
) -> StockMovement:
    """Ledger row + outbox event + cache bump for one product's change (the stock
    itself is the caller's, under its lock; see stock_adjust and the order saga).

    The ledger row is also the stock rollup's delta (see stock_ledger_fold); other
    rollups are the caller's.
    """
    movement = StockMovement.objects.create(
        product=product,
        shop_id=product.shop_id,
        category_id=product.category_id,
        delta=after - before,
        stock_before=before,
        stock_after=after,
        reason=reason[:200],
        method=method,
        actor_id=actor_ref(actor),
        order_id=order_id,
        idempotency_key=idempotency_key,
    )
    outbox_enqueue(
        topic=TOPIC_STOCK_CHANGED,
        key=f"product:{product.pk}",
        payload={
            "product_id": product.pk,
            "delta": after - before,
            "stock_before": before,
            "stock_after": after,
            "method": method,
            "actor_id": actor_ref(actor),
            "order_id": order_id,
            "movement_id": movement.pk,
        },
    )
    bump(*stock_namespaces(before, after))
    ledger_written(movement.pk)
    return movement


def stock_namespaces(before: int, after: int) -> tuple[str, ...]:
    """What a stock move invalidates: the low-stock list only when it is or was low."""
    if min(before, after) <= LOW_STOCK_INDEX_MAX:
        return ("stock", "lowstock")
    return ("stock",)
