"""Locked adjustments and optimistic sets keep stock and ledger in agreement."""

from __future__ import annotations

import threading
import time
from contextlib import nullcontext

import psycopg
import pytest
from django.db import DataError, OperationalError, connection, transaction
from django.db.models import Sum
from hypothesis import given, settings
from hypothesis import strategies as st

from store.exceptions import InsufficientStock, StockLimitExceeded, VersionConflict
from store.models import OutboxEvent, Product, StockMovement
from store.services.stock import MAX_UNITS, stock_adjust, stock_set_optimistic
from store.tests import factories
from store.tests.services.concurrency import run_concurrently


def _ledger_holds(product: Product) -> None:
    product.refresh_from_db()
    total = StockMovement.objects.filter(product=product).aggregate(s=Sum("delta"))["s"] or 0
    assert product.stock == product.initial_stock + total


@pytest.fixture
def product(db: None) -> Product:
    return factories.product(shop=factories.shop(), category=factories.category(), stock=10)


def test_adjust_writes_ledger_row_and_outbox_event(product: Product, operator) -> None:
    change = stock_adjust(
        product=product, delta=-3, actor=operator, reason="damaged", idempotency_key="k1"
    )
    product.refresh_from_db()
    assert product.stock == 7
    assert product.version == 2
    movement = change.movement
    assert (movement.delta, movement.stock_before, movement.stock_after) == (-3, 10, 7)
    assert (movement.actor, movement.reason, movement.method) == (operator, "damaged", "adjust")
    assert movement.idempotency_key == "k1"
    event = OutboxEvent.objects.get(topic="stock.changed")
    assert event.key == f"product:{product.pk}"
    assert event.payload["stock_after"] == 7
    _ledger_holds(product)


def test_adjust_below_zero_is_refused_with_the_available_count(product: Product, operator) -> None:
    with pytest.raises(InsufficientStock) as info:
        stock_adjust(product=product, delta=-11, actor=operator, reason="")
    assert str(info.value) == "Only 10 in stock: cannot remove 11."
    product.refresh_from_db()
    assert product.stock == 10
    assert not StockMovement.objects.exists()
    assert not OutboxEvent.objects.exists()


def test_adjust_past_the_column_maximum_is_refused(product: Product, operator) -> None:
    with pytest.raises(StockLimitExceeded):
        stock_adjust(product=product, delta=MAX_UNITS, actor=operator)
    product.refresh_from_db()
    assert product.stock == 10


@pytest.mark.django_db
@settings(max_examples=25, deadline=None)
@given(deltas=st.lists(st.integers(min_value=-15, max_value=15).filter(bool), max_size=12))
def test_ledger_sum_always_equals_the_stock_change(deltas: list[int]) -> None:
    # Each example gets its own product: the test transaction spans all examples.
    product = factories.product(shop=factories.shop(), category=factories.category(), stock=5)
    expected = 5
    for delta in deltas:
        if expected + delta < 0:
            with pytest.raises(InsufficientStock):
                stock_adjust(product=product, delta=delta, actor=None, reason="h")
        else:
            stock_adjust(product=product, delta=delta, actor=None, reason="h")
            expected += delta
    _ledger_holds(product)
    assert product.stock == expected


def test_optimistic_set_applies_at_the_expected_version(product: Product, operator) -> None:
    change = stock_set_optimistic(
        product=product, expected_version=1, new_stock=4, new_price=1500, actor=operator
    )
    assert (change.product.stock, change.product.price, change.product.version) == (4, 1500, 2)
    assert change.movement is not None
    assert change.movement.delta == -6
    assert change.movement.method == "optimistic"
    assert set(OutboxEvent.objects.values_list("topic", flat=True)) == {
        "stock.changed",
        "price.changed",
    }
    _ledger_holds(product)


def test_optimistic_set_on_a_stale_version_reports_current_values(
    product: Product, operator
) -> None:
    stock_adjust(product=product, delta=5, actor=operator)
    with pytest.raises(VersionConflict) as info:
        stock_set_optimistic(product=product, expected_version=1, new_stock=0, actor=operator)
    assert info.value.current == {"stock": 15, "price": 1000, "version": 2}
    assert "now stock 15, price 10.00" in str(info.value)
    product.refresh_from_db()
    assert product.stock == 15
    _ledger_holds(product)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_fifty_concurrent_decrements_on_twenty_apply_exactly_twenty() -> None:
    product = factories.product(shop=factories.shop(), category=factories.category(), stock=20)

    def take_one(i: int) -> str:
        try:
            stock_adjust(product=product.pk, delta=-1, actor=None, reason=f"t{i}")
        except InsufficientStock:
            return "refused"
        return "applied"

    results = run_concurrently(50, take_one)
    assert results.count("applied") == 20, results
    assert results.count("refused") == 30
    product.refresh_from_db()
    assert product.stock == 0
    assert StockMovement.objects.filter(product=product).count() == 20
    _ledger_holds(product)
    # Events sort (and so publish) in the order the changes were applied.
    events = OutboxEvent.objects.filter(key=f"product:{product.pk}").order_by("created_at")
    assert [e.payload["stock_after"] for e in events] == list(range(19, -1, -1))


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_the_prepared_adjustment_survives_a_rollback_and_a_reconnect() -> None:
    from django.db import connection, transaction

    product = factories.product(shop=factories.shop(), category=factories.category(), stock=10)
    stock_adjust(product=product, delta=-1, actor=None)

    def prepared() -> list[str]:
        with connection.cursor() as cursor:
            cursor.execute("SELECT name FROM pg_prepared_statements")
            return [row[0] for row in cursor.fetchall()]

    assert "storeops_stock_adjust" in prepared()

    # A rolled-back caller's transaction keeps the session's prepared statement.
    def caller_fails_after_adjusting() -> None:
        with transaction.atomic():
            stock_adjust(product=product, delta=-1, actor=None)
            raise RuntimeError("caller fails after the adjustment")

    with pytest.raises(RuntimeError):
        caller_fails_after_adjusting()
    stock_adjust(product=product, delta=-1, actor=None)
    # A new session prepares it again.
    connection.close()
    stock_adjust(product=product, delta=-1, actor=None)
    product.refresh_from_db()
    assert product.stock == 7
    _ledger_holds(product)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_the_kept_adjust_cursor_still_reports_every_query_to_django(
    django_assert_num_queries,
) -> None:
    product = factories.product(shop=factories.shop(), category=factories.category(), stock=10)
    stock_adjust(product=product, delta=-1, actor=None)  # prepares, keeps the cursor
    with django_assert_num_queries(1) as captured:
        stock_adjust(product=product, delta=-1, actor=None)
    assert captured.captured_queries[0]["sql"].startswith("EXECUTE storeops_stock_adjust")


# --- the adjustment statement through libpq (no cursor observed) ----------------


def _hold_row_lock(product: Product) -> psycopg.Connection:
    """Another session that holds the product's row lock until it commits."""
    db = connection.settings_dict
    other = psycopg.connect(
        host=db["HOST"], port=db["PORT"], user=db["USER"], dbname=db["NAME"], autocommit=False
    )
    other.execute("SELECT 1 FROM store_product WHERE id = %s FOR UPDATE", [product.pk])
    return other


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_an_adjustment_waiting_for_a_locked_row_lets_the_other_threads_run() -> None:
    product = factories.product(shop=factories.shop(), category=factories.category(), stock=10)
    holder = _hold_row_lock(product)
    waiting = threading.Thread(
        target=lambda: stock_adjust(product=product.pk, delta=2, actor=None, reason="queued")
    )
    waiting.start()
    try:
        time.sleep(0.2)  # the adjustment now waits on the row lock, inside libpq
        started = time.monotonic()
        sum(range(2_000_000))  # pure Python: needs the GIL the waiting thread must not hold
        assert time.monotonic() - started < 2.0
        assert waiting.is_alive()
    finally:
        holder.commit()
        holder.close()
        waiting.join(timeout=10)
    assert not waiting.is_alive()
    product.refresh_from_db()
    assert product.stock == 12
    _ledger_holds(product)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_an_adjustment_that_times_out_on_a_locked_row_writes_nothing_and_the_session_recovers() -> (
    None
):
    product = factories.product(shop=factories.shop(), category=factories.category(), stock=10)
    stock_adjust(product=product.pk, delta=1, actor=None)  # prepared on this session
    holder = _hold_row_lock(product)
    try:
        with connection.cursor() as cursor:
            cursor.execute("SET lock_timeout = '200ms'")
        with pytest.raises(OperationalError, match="lock timeout"):
            stock_adjust(product=product.pk, delta=5, actor=None, reason="too late")
    finally:
        holder.rollback()
        holder.close()
        with connection.cursor() as cursor:
            cursor.execute("RESET lock_timeout")
    assert not StockMovement.objects.filter(reason="too late").exists()
    change = stock_adjust(product=product.pk, delta=5, actor=None, reason="on time")
    assert (change.movement.stock_before, change.movement.stock_after) == (11, 16)
    _ledger_holds(product)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("in_transaction", [False, True], ids=["alone", "in-a-transaction"])
def test_a_reason_with_a_nul_byte_is_refused_whole_not_cut(in_transaction: bool) -> None:
    product = factories.product(shop=factories.shop(), category=factories.category(), stock=10)
    with pytest.raises(DataError), transaction.atomic() if in_transaction else nullcontext():
        stock_adjust(product=product.pk, delta=1, actor=None, reason="box\x00 damaged")
    assert not StockMovement.objects.exists()


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("in_transaction", [False, True], ids=["alone", "in-a-transaction"])
def test_the_returned_change_is_the_stored_row(operator, in_transaction: bool) -> None:
    product = factories.product(shop=factories.shop(), category=factories.category(), stock=10)
    with transaction.atomic() if in_transaction else nullcontext():
        change = stock_adjust(product=product.pk, delta=4, actor=operator, reason="recount")
    stored = StockMovement.objects.get()
    fields = [field.attname for field in StockMovement._meta.concrete_fields]
    assert [getattr(change.movement, f) for f in fields] == [getattr(stored, f) for f in fields]
    assert (change.product.stock, change.product.version) == (14, 2)
