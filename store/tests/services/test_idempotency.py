"""Idempotency keys: one application per key, replays, mismatches, expiry."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from store.exceptions import IdempotencyMismatch, InsufficientStock
from store.models import IdempotencyKey, Product, StockMovement
from store.services.idempotency import (
    StoredResponse,
    idempotency_cleanup,
    idempotency_run,
    request_fingerprint,
)
from store.services.stock import stock_adjust
from store.tests import factories
from store.tests.services.concurrency import run_concurrently


@pytest.fixture
def product(db: None) -> Product:
    return factories.product(shop=factories.shop(), category=factories.category(), stock=10)


def _adjust(product: Product, user, key: str, delta: int) -> StoredResponse:
    def perform() -> StoredResponse:
        change = stock_adjust(product=product.pk, delta=delta, actor=user, idempotency_key=key)
        return StoredResponse(status=303, location=f"/done/{change.product.stock}")

    fingerprint = request_fingerprint("adjust", {"product": product.pk, "delta": delta})
    return idempotency_run(user=user, key=key, fingerprint=fingerprint, perform=perform).response


def test_same_key_same_payload_replays_without_applying_again(product, operator) -> None:
    first = _adjust(product, operator, "key-1", -2)
    second = _adjust(product, operator, "key-1", -2)
    assert first == second == StoredResponse(status=303, location="/done/8")
    product.refresh_from_db()
    assert product.stock == 8
    assert StockMovement.objects.count() == 1


def test_same_key_other_payload_is_rejected(product, operator) -> None:
    _adjust(product, operator, "key-1", -2)
    with pytest.raises(IdempotencyMismatch):
        _adjust(product, operator, "key-1", -3)
    product.refresh_from_db()
    assert product.stock == 8


def test_keys_are_scoped_per_user(product, operator, superuser) -> None:
    _adjust(product, operator, "shared", -1)
    _adjust(product, superuser, "shared", -1)
    product.refresh_from_db()
    assert product.stock == 8


def test_a_failed_attempt_frees_the_key(product, operator) -> None:
    with pytest.raises(InsufficientStock):
        _adjust(product, operator, "key-1", -50)
    assert not IdempotencyKey.objects.exists()
    assert _adjust(product, operator, "key-1", -5).location == "/done/5"


def test_expired_keys_are_cleaned_up_and_free_again(product, operator) -> None:
    _adjust(product, operator, "old", -1)
    later = timezone.now() + timedelta(hours=25)
    assert idempotency_cleanup(now=later - timedelta(hours=2)) == 0
    assert idempotency_cleanup(now=later) == 1
    assert _adjust(product, operator, "old", -1).location == "/done/8"


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_thirty_concurrent_submissions_of_one_key_apply_once(make_user) -> None:
    user = make_user("clicker")
    product = factories.product(shop=factories.shop(), category=factories.category(), stock=100)
    results = run_concurrently(30, lambda i: _adjust(product, user, "double-click", -1))
    assert all(r == StoredResponse(status=303, location="/done/99") for r in results), results
    product.refresh_from_db()
    assert product.stock == 99
    assert StockMovement.objects.filter(product=product).count() == 1
