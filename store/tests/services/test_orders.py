"""Orders: placing locks in pk order, paying once, cancelling restocks through the ledger."""

from __future__ import annotations

import pytest
from django.db.models import Sum

from store.exceptions import (
    InsufficientStock,
    InvalidOrder,
    OrderCancelled,
    OrderNeedsRefund,
    PaymentAmountMismatch,
)
from store.models import OutboxEvent, Product, StockMovement
from store.services.orders import order_cancel, order_mark_paid, order_place
from store.services.payments import payment_process
from store.services.stock import stock_adjust
from store.tests import factories
from store.tests.services.concurrency import run_concurrently


@pytest.fixture
def catalog(db: None) -> tuple:
    shop = factories.shop()
    category = factories.category()
    a = factories.product(shop=shop, category=category, stock=10, price=250)
    b = factories.product(shop=shop, category=category, stock=5, price=1000)
    return shop, a, b


def _ledger_holds(*products: Product) -> None:
    for product in products:
        product.refresh_from_db()
        total = StockMovement.objects.filter(product=product).aggregate(s=Sum("delta"))["s"] or 0
        assert product.stock == product.initial_stock + total


def test_place_decrements_stock_snapshots_prices_and_writes_ledger(catalog, operator) -> None:
    shop, a, b = catalog
    order = order_place(user=operator, shop=shop, lines=[(b.pk, 2), (a.pk, 3), (a.pk, 1)])
    assert sorted(order.items.values_list("product_id", "quantity", "unit_price")) == sorted(
        [(a.pk, 4, 250), (b.pk, 2, 1000)]
    )
    assert order.customer_id == operator.pk
    assert set(StockMovement.objects.filter(order=order).values_list("product_id", "delta")) == {
        (a.pk, -4),
        (b.pk, -2),
    }
    assert OutboxEvent.objects.filter(topic="order.placed", key=f"order:{order.pk}").exists()
    _ledger_holds(a, b)
    assert (a.stock, b.stock) == (6, 3)
    assert (order.total, order.item_count) == (4 * 250 + 2 * 1000, 2)
    assert factories.orders_whose_totals_disagree_with_their_items() == []


def test_place_refuses_when_one_line_lacks_stock_and_changes_nothing(catalog, operator) -> None:
    shop, a, b = catalog
    with pytest.raises(InsufficientStock, match="Only 5 in stock"):
        order_place(user=operator, shop=shop, lines=[(a.pk, 1), (b.pk, 6)])
    a.refresh_from_db()
    assert a.stock == 10
    assert not StockMovement.objects.exists()


def test_place_rejects_bad_lines(catalog, operator) -> None:
    shop, a, _ = catalog
    other = factories.product(shop=factories.shop(), category=a.category)
    with pytest.raises(InvalidOrder, match="between 1 and"):
        order_place(user=operator, shop=shop, lines=[(a.pk, 0)])
    with pytest.raises(InvalidOrder, match="Unknown product"):
        order_place(user=operator, shop=shop, lines=[(999_999, 1)])
    with pytest.raises(InvalidOrder, match="must belong"):
        order_place(user=operator, shop=shop, lines=[(other.pk, 1)])


def test_mark_paid_is_idempotent(catalog, operator) -> None:
    shop, a, _ = catalog
    order = order_place(user=operator, shop=shop, lines=[(a.pk, 1)])
    first, changed = order_mark_paid(order=order, actor=operator)
    second, changed_again = order_mark_paid(order=order, actor=operator)
    assert (changed, changed_again) == (True, False)
    assert first.paid_at == second.paid_at
    assert OutboxEvent.objects.filter(topic="order.paid").count() == 1


def test_payment_of_the_wrong_amount_leaves_the_order_unpaid(catalog, operator) -> None:
    shop, a, _ = catalog
    order = order_place(user=operator, shop=shop, lines=[(a.pk, 2)])
    with pytest.raises(PaymentAmountMismatch):
        payment_process(order=order, amount=1, idempotency_key="p1", actor=operator)
    order.refresh_from_db()
    assert not order.paid
    result = payment_process(order=order, amount=500, idempotency_key="p2", actor=operator)
    assert result.newly_paid
    again = payment_process(order=order, amount=500, idempotency_key="p3", actor=operator)
    assert not again.newly_paid
    assert OutboxEvent.objects.filter(topic="payment.captured").count() == 1


def test_cancel_restocks_with_ledger_rows_pointing_at_the_order(catalog, operator) -> None:
    shop, a, b = catalog
    order = order_place(user=operator, shop=shop, lines=[(a.pk, 3), (b.pk, 1)])
    cancelled = order_cancel(order=order, actor=operator, reason="customer asked")
    again = order_cancel(order=order, actor=operator, reason="twice")
    assert cancelled.cancelled_at is not None
    assert again.cancelled_at == cancelled.cancelled_at
    restock = StockMovement.objects.filter(order=order, method="cancel")
    assert sorted(restock.values_list("product_id", "delta")) == sorted([(a.pk, 3), (b.pk, 1)])
    _ledger_holds(a, b)
    assert (a.stock, b.stock) == (10, 5)
    with pytest.raises(OrderCancelled):
        order_mark_paid(order=order, actor=operator)


def test_cancelling_a_paid_order_needs_the_refund_flag(catalog, operator) -> None:
    shop, a, _ = catalog
    order = order_place(user=operator, shop=shop, lines=[(a.pk, 1)])
    order_mark_paid(order=order, actor=operator)
    with pytest.raises(OrderNeedsRefund):
        order_cancel(order=order, actor=operator, reason="")
    order_cancel(order=order, actor=operator, reason="refunded", refunded=True)
    a.refresh_from_db()
    assert a.stock == 10


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_orders_sharing_products_in_opposite_order_all_finish(make_user) -> None:
    shop = factories.shop()
    category = factories.category()
    a = factories.product(shop=shop, category=category, stock=1000)
    b = factories.product(shop=shop, category=category, stock=1000)
    buyer = make_user("buyer")

    def place(i: int) -> int:
        lines = [(a.pk, 1), (b.pk, 2)] if i % 2 else [(b.pk, 2), (a.pk, 1)]
        # Interleave with locked adjustments on the same rows, taken in the other order.
        stock_adjust(product=b if i % 2 else a, delta=1, actor=None, reason="restock")
        return order_place(user=buyer, shop=shop, lines=lines).pk

    results = run_concurrently(20, place)
    assert all(isinstance(r, int) for r in results), results
    _ledger_holds(a, b)
    assert (a.stock, b.stock) == (1000 - 20 + 10, 1000 - 40 + 10)
