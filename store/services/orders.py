"""Orders: placing (locks products in ascending pk order), marking paid, cancelling.

Cancelling is the compensating step of the order saga: it restocks every line
with ledger rows that point back at the order.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from django.db.models import F
from django.utils import timezone

from store.caching import bump
from store.exceptions import (
    InsufficientStock,
    InvalidOrder,
    OrderCancelled,
    OrderNeedsRefund,
)
from store.models import Order, OrderItem, Product, Shop, StockMovement
from store.services.actors import Actor, actor_ref
from store.services.ledger import ledger_record
from store.services.outbox import (
    TOPIC_ORDER_CANCELLED,
    TOPIC_ORDER_PAID,
    TOPIC_ORDER_PLACED,
    outbox_enqueue,
)
from store.services.retry import atomic_with_retry
from store.services.rollups import OrderState, RollupDeltas, order_lines

MAX_LINE_QUANTITY = 10_000


def _lock_products(product_ids: Iterable[int]) -> dict[int, Product]:
    """Row locks taken in ascending pk order: two orders never wait on each other in a cycle."""
    locked = (
        Product.objects.select_for_update()
        .filter(pk__in=sorted(set(product_ids)))
        .order_by("pk")
        .only("pk", "shop_id", "category_id", "stock", "price", "version")
    )
    return {product.pk: product for product in locked}


def _move_stock(
    products: dict[int, Product],
    deltas: dict[int, int],
    *,
    method: str,
    actor: Actor,
    reason: str,
    order_id: int,
) -> None:
    """Apply each product's delta with its ledger row, in ascending pk order."""
    for pk in sorted(deltas):
        product = products[pk]
        before = product.stock
        Product.objects.filter(pk=pk).update(
            stock=before + deltas[pk], version=F("version") + 1, updated_at=timezone.now()
        )
        product.stock = before + deltas[pk]
        product.version += 1
        ledger_record(
            product=product,
            before=before,
            after=product.stock,
            method=method,
            actor=actor,
            reason=reason,
            idempotency_key="",
            order_id=order_id,
        )


def order_place(*, user: Actor, shop: Shop, lines: Iterable[tuple[int, int]]) -> Order:
    """Place an order for ``(product_id, quantity)`` lines in one transaction."""
    wanted: Counter[int] = Counter()
    for product_id, quantity in lines:
        if quantity <= 0 or quantity > MAX_LINE_QUANTITY:
            raise InvalidOrder(f"Quantities must be between 1 and {MAX_LINE_QUANTITY}.")
        wanted[product_id] += quantity
    if not wanted:
        raise InvalidOrder("An order needs at least one line.")
    customer_id = actor_ref(user)
    if customer_id is None:
        raise InvalidOrder("Orders are placed for a signed-in customer.")

    def apply() -> Order:
        products = _lock_products(wanted)
        missing = set(wanted) - set(products)
        if missing:
            raise InvalidOrder(f"Unknown product(s): {sorted(missing)}.")
        if any(p.shop_id != shop.pk for p in products.values()):
            raise InvalidOrder(f"Every product must belong to {shop}.")
        for pk in sorted(wanted):
            if products[pk].stock < wanted[pk]:
                raise InsufficientStock(
                    product_id=pk, available=products[pk].stock, requested=wanted[pk]
                )
        order = Order.objects.create(
            customer_id=customer_id,
            shop=shop,
            created_at=timezone.now(),
            total=sum(products[pk].price * quantity for pk, quantity in wanted.items()),
            item_count=len(wanted),
        )
        OrderItem.objects.bulk_create(
            OrderItem(
                order=order, product_id=pk, quantity=wanted[pk], unit_price=products[pk].price
            )
            for pk in sorted(wanted)
        )
        rollup = RollupDeltas()
        rollup.order(OrderState.of(order, ()), 1)
        _move_stock(
            products,
            {pk: -quantity for pk, quantity in wanted.items()},
            method=StockMovement.Method.ORDER,
            actor=user,
            reason=f"order #{order.pk}",
            order_id=order.pk,
        )
        rollup.apply()
        outbox_enqueue(
            topic=TOPIC_ORDER_PLACED,
            key=f"order:{order.pk}",
            payload={
                "order_id": order.pk,
                "shop_id": shop.pk,
                "customer_id": customer_id,
                "lines": [[pk, wanted[pk], products[pk].price] for pk in sorted(wanted)],
            },
        )
        bump("orders")
        return order

    return atomic_with_retry(apply)


def order_mark_paid(*, order: Order | int, actor: Actor) -> tuple[Order, bool]:
    """Mark paid once; returns the order and whether this call changed it."""
    pk = order if isinstance(order, int) else order.pk

    def apply() -> tuple[Order, bool]:
        locked = Order.objects.select_for_update().get(pk=pk)
        if locked.cancelled_at is not None:
            raise OrderCancelled(pk=pk)
        if locked.paid:
            return locked, False
        lines = order_lines(pk)
        rollup = RollupDeltas()
        rollup.order(OrderState.of(locked, lines), -1)
        locked.paid = True
        locked.paid_at = timezone.now()
        locked.version += 1
        locked.save(update_fields=["paid", "paid_at", "version"])
        rollup.order(OrderState.of(locked, lines), 1)
        rollup.apply()
        outbox_enqueue(
            topic=TOPIC_ORDER_PAID,
            key=f"order:{pk}",
            payload={"order_id": pk, "actor_id": actor_ref(actor)},
        )
        # Open orders and revenue both changed; their panels go stale at once.
        bump("orders", "sales")
        return locked, True

    return atomic_with_retry(apply)


def order_cancel(*, order: Order | int, actor: Actor, reason: str, refunded: bool = False) -> Order:
    """Cancel and restock every line; idempotent. A paid order must be refunded first."""
    pk = order if isinstance(order, int) else order.pk

    def apply() -> Order:
        locked = Order.objects.select_for_update().get(pk=pk)
        if locked.cancelled_at is not None:
            return locked
        if locked.paid and not refunded:
            raise OrderNeedsRefund(pk=pk)
        lines = order_lines(pk)
        quantities: Counter[int] = Counter()
        for line in lines:
            quantities[line.product_id] += line.quantity
        rollup = RollupDeltas()
        rollup.order(OrderState.of(locked, lines), -1)
        _move_stock(
            _lock_products(quantities),
            quantities,
            method=StockMovement.Method.CANCEL,
            actor=actor,
            reason=reason or f"order #{pk} cancelled",
            order_id=pk,
        )
        locked.cancelled_at = timezone.now()
        locked.version += 1
        locked.save(update_fields=["cancelled_at", "version"])
        rollup.order(OrderState.of(locked, lines), 1)
        rollup.apply()
        outbox_enqueue(
            topic=TOPIC_ORDER_CANCELLED,
            key=f"order:{pk}",
            payload={
                "order_id": pk,
                "actor_id": actor_ref(actor),
                "reason": reason,
                "refunded": refunded,
            },
        )
        # A refund takes revenue back; an open order only leaves the open count.
        bump(*(("orders", "sales") if locked.paid else ("orders",)))
        return locked

    return atomic_with_retry(apply)
