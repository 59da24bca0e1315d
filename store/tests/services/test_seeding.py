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
