"""Querysets behind the tables: joins, annotations and the text search."""

from __future__ import annotations

import pytest

from store.models import Order
from store.selectors.catalog import (
    order_table_rows,
    product_search,
    product_table_rows,
    stock_ledger_rows,
)
from store.tests import factories as f
from store.tests.plans import query_plan

pytestmark = pytest.mark.django_db


@pytest.fixture
def shelf():
    shop, category = f.shop(), f.category()
    names = ["Steel hammer", "Claw HAMMER deluxe", "Hand saw", "50% off drill", "Drill 5000"]
    return {name: f.product(shop=shop, category=category, name=name) for name in names}


def names(queryset) -> set[str]:
    return {p.name for p in queryset}


def test_product_rows_need_one_query_for_their_relations(shelf, django_assert_num_queries) -> None:
    with django_assert_num_queries(1):
        rows = [(p.shop.name, p.category.name, p.price) for p in product_table_rows()]
    assert len(rows) == 5


def test_search_is_case_insensitive_and_matches_substrings(shelf) -> None:
    assert names(product_search(queryset=product_table_rows(), text="hammer")) == {
        "Steel hammer",
        "Claw HAMMER deluxe",
    }
    assert names(product_search(queryset=product_table_rows(), text="  saw ")) == {"Hand saw"}


def test_search_treats_like_wildcards_literally(shelf) -> None:
    assert names(product_search(queryset=product_table_rows(), text="%")) == {"50% off drill"}
    assert names(product_search(queryset=product_table_rows(), text="_")) == set()


def test_blank_search_keeps_every_row(shelf) -> None:
    assert product_search(queryset=product_table_rows(), text=" ").count() == 5


@pytest.mark.postgres
def test_search_tolerates_typos_on_postgresql(shelf) -> None:
    """Word similarity (pg_trgm) finds a name from a misspelt word."""
    assert "Steel hammer" in names(product_search(queryset=product_table_rows(), text="hamer"))
    assert "Hand saw" not in names(product_search(queryset=product_table_rows(), text="hamer"))


@pytest.mark.postgres
def test_search_uses_the_trigram_index(shelf) -> None:
    found = product_search(queryset=product_table_rows(), text="hammer")
    sql = str(found.query)
    assert "ILIKE" in sql  # not UPPER(name) LIKE, which the GIN index cannot serve
    assert "%>" in sql
    plan = query_plan(found, where_only=True)
    assert "Bitmap Index Scan on product_name_trgm" in plan, plan


def test_orders_carry_item_count_and_total(shelf) -> None:
    hammer, saw = shelf["Steel hammer"], shelf["Hand saw"]
    shop = hammer.shop
    two_lines = f.order(shop=shop, lines=[(hammer, 2), (saw, 3)])
    empty = Order.objects.create(shop=shop, customer_id=9, created_at=two_lines.created_at)
    rows = {o.pk: o for o in order_table_rows()}
    assert (rows[two_lines.pk].item_count, rows[two_lines.pk].total) == (
        2,
        2 * hammer.price + 3 * saw.price,
    )
    assert (rows[empty.pk].item_count, rows[empty.pk].total) == (0, 0)


def test_order_rows_filter_and_sort_on_the_annotations(shelf, django_assert_num_queries) -> None:
    hammer = shelf["Steel hammer"]
    small = f.order(shop=hammer.shop, lines=[(hammer, 1)])
    big = f.order(shop=hammer.shop, lines=[(hammer, 5)])
    with django_assert_num_queries(1):
        ordered = [
            o.pk for o in order_table_rows().filter(total__gte=hammer.price).order_by("-total")
        ]
    assert ordered == [big.pk, small.pk]


def test_ledger_rows_join_product_and_actor(shelf, operator, django_assert_num_queries) -> None:
    from store.models import StockMovement

    StockMovement.objects.create(
        product=shelf["Hand saw"],
        delta=1,
        stock_before=1,
        stock_after=2,
        method="adjust",
        actor=operator,
    )
    with django_assert_num_queries(1):
        rows = [(m.product.name, m.actor.username) for m in stock_ledger_rows()]
    assert rows == [("Hand saw", "operator")]
