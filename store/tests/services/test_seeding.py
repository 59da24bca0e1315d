"""Seeding: the counts asked for, the same rows for the same seed, customers on their shard."""

from datetime import UTC, datetime

import pytest
from django.db.models import F

from store.models import Category, CustomerEvent, CustomerProfile, Order, OrderItem, Product, Shop
from store.services.seeding import SeedPlan, seed_demo
from store.sharding import default_bucket_ranges, shard_for_user
from store.tests import factories

pytestmark = pytest.mark.django_db(databases="__all__", transaction=True)
NOW = datetime(2026, 11, 1, 12, tzinfo=UTC)


def _plan(seed: int = 7) -> SeedPlan:
    return SeedPlan(
        shops=3, categories=4, products=300, orders=400, customers=60, seed=seed, now=NOW
    )


def _snapshot() -> tuple[list, list, list]:
    return (
        list(Product.objects.values_list("name", "price", "stock", "shop_id", "category_id")),
        list(Order.objects.values_list("customer_id", "shop_id", "paid", "created_at")),
        list(OrderItem.objects.values_list("order_id", "product_id", "quantity", "unit_price")),
    )


def _wipe() -> None:
    OrderItem.objects.all().delete()
    Order.objects.all().delete()
    Product.objects.all().delete()
    Shop.objects.all().delete()
    Category.objects.all().delete()
    for alias in default_bucket_ranges():
        CustomerProfile.objects.using(alias).all().delete()
        CustomerEvent.objects.using(alias).all().delete()


def test_counts_and_invariants() -> None:
    result = seed_demo(plan=_plan())
    assert result.counts["products"] == Product.objects.count() == 300
    assert result.counts["orders"] == Order.objects.count() == 400
    assert result.counts["order items"] == OrderItem.objects.count() >= 400
    # The seed is the starting snapshot: the ledger is empty, so stock == initial stock.
    assert not Product.objects.exclude(stock=F("initial_stock")).exists()
    assert Product.objects.filter(stock__lte=5).exists(), "some products start at low stock"
    assert Order.objects.filter(paid=True).exists()
    assert Order.objects.filter(paid=False).exists()
    assert factories.orders_whose_totals_disagree_with_their_items() == []
    # Unit prices are snapshots of the product price at seeding time.
    assert not OrderItem.objects.exclude(unit_price=F("product__price")).exists()


def test_customers_land_on_their_own_shard() -> None:
    seed_demo(plan=_plan())
    total = 0
    for alias in default_bucket_ranges():
        user_ids = list(CustomerProfile.objects.using(alias).values_list("user_id", flat=True))
        assert user_ids, f"{alias} got no customers"
        assert {shard_for_user(uid) for uid in user_ids} == {alias}
        total += len(user_ids)
    assert total == 60


def test_same_seed_same_data_other_seed_other_data() -> None:
    seed_demo(plan=_plan(seed=7))
    first = _snapshot()
    _wipe()
    seed_demo(plan=_plan(seed=7))
    assert _snapshot() == first
    _wipe()
    seed_demo(plan=_plan(seed=8))
    assert _snapshot()[0] != first[0]


def test_refuses_to_seed_over_existing_catalog() -> None:
    seed_demo(plan=_plan())
    with pytest.raises(ValueError, match="already has data"):
        seed_demo(plan=_plan())


def test_rejects_impossible_plans() -> None:
    with pytest.raises(ValueError, match="--products must be at least 1"):
        SeedPlan(products=0)


def _schema_objects() -> set[tuple[str, str]]:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT conrelid::regclass::text, pg_get_constraintdef(oid) FROM pg_constraint "
            "WHERE conrelid::regclass::text LIKE 'store_%%' "
            "UNION SELECT tablename, indexdef FROM pg_indexes WHERE tablename LIKE 'store_%%'"
        )
        return set(cursor.fetchall())


@pytest.mark.postgres
def test_bulk_load_restores_every_index_and_foreign_key() -> None:
    before = _schema_objects()
    assert any("FOREIGN KEY" in definition for _, definition in before)
    seed_demo(plan=_plan())
    assert _schema_objects() == before


def _ages_in_days(queryset=None) -> list[float]:
    orders = Order.objects.all() if queryset is None else queryset
    return [
        (NOW - created).total_seconds() / 86400
        for created in orders.values_list("created_at", flat=True)
    ]


def test_paid_at_never_lies_in_the_future() -> None:
    seed_demo(plan=_plan())
    paid = Order.objects.filter(paid=True)
    assert paid.exists()
    assert not paid.filter(paid_at__gt=NOW).exists()
    assert not paid.filter(paid_at__lt=F("created_at")).exists()
    assert not Order.objects.filter(paid=True, paid_at__isnull=True).exists()


def test_a_longer_history_keeps_the_last_90_days_alike() -> None:
    # The same store kept four times as long: four times the orders over 360 days.
    seed_demo(plan=_plan())
    short = sorted(_ages_in_days())
    _wipe()
    seed_demo(plan=SeedPlan(**{**_plan().__dict__, "orders": 1600, "history_days": 360}))
    long = sorted(_ages_in_days())
    recent = [age for age in long if age < 90]
    assert max(short) < 90
    assert max(long) < 360
    assert sum(1 for age in long if age > 180) > 400, "older history is spread over the year"
    # About a quarter of the orders fall in the last 90 days (400 +- 3 sd of a binomial).
    assert 350 <= len(recent) <= 450
    # ... skewed towards today as in the 90-day data set: both follow the seed's age
    # distribution (age = 90 days x u^1.6), within 4 standard errors at each quartile.
    for q in (0.25, 0.5, 0.75):
        age = 90 * q**1.6
        for ages in (short, recent):
            share = sum(1 for a in ages if a < age) / len(ages)
            assert abs(share - q) < 4 * (q * (1 - q) / len(ages)) ** 0.5, (q, share)


def test_a_history_up_to_90_days_draws_the_same_numbers() -> None:
    # Only the ages scale: every later draw (items, products, quantities) is unchanged,
    # so the default plan (90 days) gives the rows it always gave.
    seed_demo(plan=_plan())
    items = _snapshot()[2]
    _wipe()
    seed_demo(plan=SeedPlan(**{**_plan().__dict__, "history_days": 30}))
    assert _snapshot()[2] == items
    assert max(_ages_in_days()) < 30


def test_rejects_a_history_shorter_than_a_day() -> None:
    with pytest.raises(ValueError, match="--history-days must be at least 1"):
        SeedPlan(history_days=0)


def test_seed_demo_command_takes_the_history_length() -> None:
    from django.core.management import CommandError, call_command

    with pytest.raises(CommandError, match="--history-days must be at least 1"):
        call_command("seed_demo", "--history-days=0", "--no-progress")
    call_command(
        "seed_demo",
        "--products=50",
        "--orders=200",
        "--customers=10",
        "--history-days=720",
        "--no-progress",
    )
    oldest = Order.objects.order_by("created_at").values_list("created_at", flat=True)[0]
    assert (Order.objects.latest("created_at").created_at - oldest).days > 90
