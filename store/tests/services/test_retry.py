"""Deadlocks are retried with back-off; other database errors are not."""

from __future__ import annotations

import threading

import pytest
from django.db import IntegrityError
from django.db.models import F

from store.models import Product, Shop
from store.services.retry import atomic_with_retry
from store.tests import factories
from store.tests.services.concurrency import run_concurrently


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_real_deadlock_is_retried_until_both_transactions_finish() -> None:
    shop, category = factories.shop(), factories.category()
    first = factories.product(shop=shop, category=category, stock=0)
    second = factories.product(shop=shop, category=category, stock=0)
    both_hold_one = threading.Barrier(2, timeout=10)
    attempts = [0, 0]

    def lock_in_order(i: int) -> None:
        # Deliberately the wrong (opposite) lock order, to force PostgreSQL's deadlock.
        order = [first.pk, second.pk] if i == 0 else [second.pk, first.pk]

        def work() -> None:
            attempts[i] += 1
            Product.objects.select_for_update().get(pk=order[0])
            if attempts[i] == 1:
                both_hold_one.wait()
            Product.objects.select_for_update().get(pk=order[1])
            Product.objects.filter(pk__in=order).update(stock=F("stock") + 1)

        atomic_with_retry(work)

    results = run_concurrently(2, lock_in_order)
    assert results == [None, None], results
    assert sum(attempts) == 3  # exactly one victim retried once
    assert set(Product.objects.values_list("stock", flat=True)) == {2}


@pytest.mark.django_db
def test_other_database_errors_are_not_retried() -> None:
    calls = []

    def duplicate_slug() -> None:
        calls.append(1)
        Shop.objects.create(name="A", slug="same")
        Shop.objects.create(name="B", slug="same")

    with pytest.raises(IntegrityError):
        atomic_with_retry(duplicate_slug)
    assert len(calls) == 1
    assert not Shop.objects.filter(slug="same").exists()
