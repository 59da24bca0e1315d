"""Payments: capture the order total once, then mark the order paid."""

from __future__ import annotations

from dataclasses import dataclass

from store.exceptions import PaymentAmountMismatch
from store.models import Order
from store.services.actors import Actor, actor_ref
from store.services.orders import order_mark_paid
from store.services.outbox import TOPIC_PAYMENT_CAPTURED, outbox_enqueue
from store.services.retry import atomic_with_retry


@dataclass(frozen=True)
class PaymentResult:
    order: Order
    newly_paid: bool


def payment_process(
    *, order: Order | int, amount: int, idempotency_key: str, actor: Actor = None
) -> PaymentResult:
    """Record a payment for the exact total; paying a paid order changes nothing."""
    pk = order if isinstance(order, int) else order.pk

    def apply() -> PaymentResult:
        paid_order, changed = order_mark_paid(order=pk, actor=actor)
        if not changed:
            return PaymentResult(order=paid_order, newly_paid=False)
        total = paid_order.total
        if amount != total:
            # Raising rolls back the mark-paid above: nothing is half-paid.
            raise PaymentAmountMismatch(amount=amount, total=total)
        outbox_enqueue(
            topic=TOPIC_PAYMENT_CAPTURED,
            key=f"order:{pk}",
            payload={
                "order_id": pk,
                "amount": amount,
                "idempotency_key": idempotency_key,
                "actor_id": actor_ref(actor),
            },
        )
        return PaymentResult(order=paid_order, newly_paid=True)

    return atomic_with_retry(apply)
