"""Rollups stay equal to the full scan through every write, alone and concurrently."""

from __future__ import annotations

import contextlib
import random
import threading
from datetime import timedelta
from io import StringIO

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connections, transaction
from django.test import override_settings
from django.utils import timezone
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from store.exceptions import (
    InsufficientStock,
    NothingToChange,
    OrderCancelled,
    StockLimitExceeded,
    VersionConflict,
)
from store.models import CategoryRollup, LedgerFold, Order, Product, StockMovement
from store.selectors.overview import store_overview
from store.selectors.rankings import rank_window
from store.selectors.rollups import rollup_differences
from store.selectors.stats import category_stats
from store.selectors.trending import trending
from store.services.catalog import product_delete, product_save
from store.services.ledger_fold import stock_ledger_fold
from store.services.orders import order_cancel, order_mark_paid, order_place
from store.services.prices import PriceFilter, price_change
from store.services.rollup_rebuild import rollups_rebuild
from store.services.sales_windows import sales_windows_advance
from store.services.stock import stock_adjust, stock_set_optimistic
from store.tests import factories
from store.tests.services.concurrency import run_concurrently

REFUSALS = (InsufficientStock, StockLimitExceeded, VersionConflict, NothingToChange, OrderCancelled)


def _clean() -> None:
    differences = rollup_differences()
    assert differences == [], "\n".join(map(str, differences[:10]))


@pytest.fixture
def buyer(db: None) -> User:
    return User.objects.create_user("buyer")


# --- Property: random write sequences, rollups == full scan after each -------

operations = st.lists(
    st.tuples(
        st.sampled_from(
            [
                "create",
                "adjust",
                "optimistic",
                "percent",
                "place",
                "pay",
                "cancel",
                "move",
                "advance",
                "fold",
            ]
        ),
        st.integers(min_value=0, max_value=10_000),
        st.integers(min_value=-12, max_value=12),
    ),
    min_size=1,
    max_size=14,
)


def _apply(step: tuple[str, int, int], buyer: User) -> None:
    kind, pick, amount = step
    products = list(Product.objects.order_by("pk"))
    product = products[pick % len(products)]
    orders = list(Order.objects.order_by("pk"))
    if kind == "create":
        category = factories.category() if pick % 5 == 0 else product.category
        product_save(
            product=Product(
                shop=product.shop,
                category=category,
                name=f"New {pick}",
                sku=f"N-{pick}-{Product.objects.count()}",
                price=100 + pick,
                stock=pick % 9,
                initial_stock=pick % 9,
            )
        )
    elif kind == "adjust":
        stock_adjust(product=product.pk, delta=amount, actor=buyer, reason="prop")
    elif kind == "optimistic":
        stock_set_optimistic(
            product=product.pk,
            expected_version=product.version,
            new_stock=abs(amount),
            new_price=product.price + amount * 7 if amount % 2 else None,
            actor=buyer,
        )
    elif kind == "percent":
        price_change(
            filters=PriceFilter(category_id=product.category_id), percent=amount or 5, actor=buyer
        )
    elif kind == "place":
        same_shop = [p for p in products if p.shop_id == product.shop_id]
        lines = [(p.pk, 1 + pick % 2) for p in same_shop[: 1 + pick % 3]]
        order_place(user=buyer, shop=product.shop, lines=lines)
    elif kind == "pay" and orders:
        order_mark_paid(order=orders[pick % len(orders)].pk, actor=buyer)
    elif kind == "cancel" and orders:
        order_cancel(order=orders[pick % len(orders)].pk, actor=buyer, reason="p", refunded=True)
    elif kind == "advance":
        # The rolling windows move on by up to 40 days (and stay consistent).
        sales_windows_advance(now=timezone.now() + timedelta(hours=pick % 960))
    elif kind == "fold":
        stock_ledger_fold()
    elif kind == "move":
        other = factories.category() if pick % 2 else product.category
        product = Product.objects.get(pk=product.pk)
        product.category = other
        product_save(product=product)


@pytest.mark.django_db
@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(steps=operations)
def test_rollups_equal_the_full_scan_after_every_write(buyer: User, steps) -> None:
    shop = factories.shop()
    category = factories.category()
    for stock in (0, 3, 40):
        factories.product(shop=shop, category=category, stock=stock, price=900 + stock)
    factories.order(
        shop=shop,
        lines=[(Product.objects.filter(shop=shop).first(), 1)],
        paid=True,
        created_at=timezone.now() - timedelta(days=2),
    )
    sales_windows_advance()
    _clean()
    for step in steps:
        # A refused write must leave the rollups as they were.
        with contextlib.suppress(*REFUSALS):
            _apply(step, buyer)
        _clean()


# --- The same under real concurrency on PostgreSQL ----------------------------


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
@override_settings(STOREOPS_LEDGER_FOLD_EVERY=7)  # folds run among the writers
def test_sixteen_connections_of_mixed_writes_leave_verify_clean(buyer: User) -> None:
    shop = factories.shop()
    categories = [factories.category() for _ in range(3)]
    products = [
        factories.product(shop=shop, category=categories[n % 3], stock=50, price=1000 + n)
        for n in range(24)
    ]
    hot = products[0].pk
    placed = [order_place(user=buyer, shop=shop, lines=[(p.pk, 1)]).pk for p in products[:16]]
    for pk in placed[:8]:
        order_mark_paid(order=pk, actor=buyer)

    def writer(i: int) -> int:
        rng = random.Random(i)
        done = 0
        for step in range(30):
            choice = (i + step) % 6
            try:
                if choice == 0:
                    stock_adjust(product=hot, delta=rng.choice([-1, 1, 2]), actor=buyer)
                elif choice == 1:
                    stock_adjust(
                        product=rng.choice(products).pk, delta=rng.randint(-3, 3) or 1, actor=buyer
                    )
                elif choice == 2:
                    order_mark_paid(order=rng.choice(placed), actor=buyer)
                elif choice == 3:
                    order_cancel(order=rng.choice(placed), actor=buyer, reason="c", refunded=True)
                elif choice == 4:
                    a, b = rng.sample(products, 2)
                    order_place(user=buyer, shop=shop, lines=[(a.pk, 1), (b.pk, 1)])
                elif step % 5 == 0:  # a move: unfolded stock must follow the ledger's stamp
                    moved = Product.objects.get(pk=rng.choice(products).pk)
                    moved.category = rng.choice(categories)
                    product_save(product=moved)
                else:
                    price_change(
                        filters=PriceFilter(category_id=rng.choice(categories).pk),
                        percent=rng.choice([-5, 5]),
                        actor=buyer,
                    )
                done += 1
            except REFUSALS:
                pass
        return done

    results = run_concurrently(16, writer)
    assert all(isinstance(r, int) for r in results), results
    _clean()
    assert LedgerFold.objects.get().folded_id > 0  # folds ran meanwhile
    stock_ledger_fold()  # records the last id; the next fold takes it
    stock_ledger_fold()
    assert LedgerFold.objects.get().folded_id == StockMovement.objects.latest("pk").pk
    out = StringIO()
    call_command("rollups", "verify", stdout=out)
    assert "agree" in out.getvalue()


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_fold_waits_for_a_lower_ledger_id_that_is_not_committed_yet(buyer: User) -> None:
    shop, category = factories.shop(), factories.category()
    slow, fast = (factories.product(shop=shop, category=category, stock=10) for _ in range(2))
    drawn, release = threading.Event(), threading.Event()
    slow_ids: list[int] = []

    def slow_writer() -> None:
        try:
            with transaction.atomic():
                change = stock_adjust(product=slow.pk, delta=-9, actor=buyer)  # now low
                assert change.movement is not None
                slow_ids.append(change.movement.pk)
                drawn.set()
                assert release.wait(30)
        finally:
            connections.close_all()

    thread = threading.Thread(target=slow_writer)
    thread.start()
    try:
        assert drawn.wait(30)
        fast_id = stock_adjust(product=fast.pk, delta=5, actor=buyer).movement.pk
        assert fast_id > slow_ids[0]
        stock_ledger_fold()
        stock_ledger_fold()  # the candidate's writer is still running: nothing folds
        assert LedgerFold.objects.get().folded_id < slow_ids[0]
        _clean()  # the committed +5 counts through the tail
    finally:
        release.set()
        thread.join(30)
    stock_ledger_fold()
    assert LedgerFold.objects.get().folded_id >= fast_id
    _clean()
    stats = category_stats(low_stock_threshold=5, sort="name")[0]
    assert (stats.stock, stats.low_stock) == (1 + 15, 1)


# --- Net revenue: a refunded order leaves every revenue figure ---------------


@pytest.mark.django_db
def test_a_refunded_order_leaves_trending_category_revenue_rank_and_paid_24h(buyer: User) -> None:
    shop, category = factories.shop(), factories.category("Kitchen")
    skillet = factories.product(shop=shop, category=category, price=1000, stock=10, name="Skillet")
    order = order_place(user=buyer, shop=shop, lines=[(skillet.pk, 3)])
    order_mark_paid(order=order.pk, actor=buyer)

    def revenue_figures() -> tuple[int, int, int, int]:
        stats = {s.name: s.revenue for s in category_stats(low_stock_threshold=5, sort="name")}
        ranked = rank_window(by="revenue", function="row_number", top=3)
        shown = trending(window="24h").products
        return (
            stats["Kitchen"],
            sum(r.value for r in ranked),
            sum(p.revenue for p in shown),
            store_overview(low_stock_threshold=5).paid_orders_24h,
        )

    assert revenue_figures() == (3000, 3000, 3000, 1)
    order_cancel(order=order.pk, actor=buyer, reason="customer returned it", refunded=True)
    assert revenue_figures() == (0, 0, 0, 0)
    assert Product.objects.get(pk=skillet.pk).stock == 10
    _clean()


# --- The command ----------------------------------------------------------------


@pytest.mark.django_db
def test_verify_names_a_drifted_row_and_rebuild_repairs_it(buyer: User) -> None:
    shop, category = factories.shop(), factories.category()
    product = factories.product(shop=shop, category=category, stock=7)
    stock_adjust(product=product.pk, delta=-2, actor=buyer)
    CategoryRollup.objects.filter(shop=shop).update(stock_sum=999)
    out = StringIO()
    with pytest.raises(CommandError, match="differ from the full scan"):
        call_command("rollups", "verify", stdout=out)
    # Stored: the drifted row plus the ledger's unfolded -2; the full scan: 7 - 2.
    assert "categories (" in out.getvalue()
    assert "stored (1, 1000, 997, 1, 0), full scan (1, 1000, 5, 1, 0)" in out.getvalue()
    call_command("rollups", "rebuild", stdout=StringIO())
    _clean()
    assert category_stats(low_stock_threshold=5, sort="name")[0].stock == 5


@pytest.mark.django_db
def test_deleting_an_unsold_product_takes_it_out_of_the_rollups(buyer: User) -> None:
    shop, category = factories.shop(), factories.category()
    keep = factories.product(shop=shop, category=category, stock=1)
    gone = factories.product(shop=shop, category=category, stock=9)
    product_delete(product=gone)
    _clean()
    stats = category_stats(low_stock_threshold=5, sort="name")[0]
    assert (stats.products, stats.stock, stats.low_stock) == (1, keep.stock, 1)


@pytest.mark.django_db
def test_rebuild_is_idempotent_and_matches_upkeep(buyer: User) -> None:
    shop, category = factories.shop(), factories.category()
    product = factories.product(shop=shop, category=category, stock=5)
    order = order_place(user=buyer, shop=shop, lines=[(product.pk, 2)])
    order_mark_paid(order=order.pk, actor=buyer)
    before = sorted(CategoryRollup.objects.values_list("slot", "stock_sum", "revenue"))
    rollups_rebuild()
    rollups_rebuild()
    after = sorted(
        (slot, stock, revenue)
        for slot, stock, revenue in CategoryRollup.objects.values_list(
            "slot", "stock_sum", "revenue"
        )
    )
    assert [r for r in after if any(r[1:])] == [r for r in before if any(r[1:])]
    _clean()
