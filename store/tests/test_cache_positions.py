"""Cache entries know the WAL position they were read at (against a real replica)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from django.conf import settings
from django.core.cache import cache
from django.db import connections

from store import caching, deadlines, replicas, routing
from store import refresh as background
from store.models import Product
from store.services.stock import stock_adjust
from store.tests import factories

pytestmark = [
    pytest.mark.replica,
    pytest.mark.postgres,
    pytest.mark.django_db(transaction=True, databases="__all__"),
]


def _on_replica(alias: str, sql: str) -> None:
    with deadlines.probe_connect(alias) as conn:
        conn.execute(sql)


@pytest.fixture
def replica() -> Iterator[str]:
    if not settings.REPLICA_ALIASES:
        pytest.fail("no replica configured: set DATABASE_REPLICA_URLS (CI does this)")
    alias = settings.REPLICA_ALIASES[0]
    replicas.replica_states_reset()
    _on_replica(alias, "SELECT pg_wal_replay_resume()")
    yield alias
    _on_replica(alias, "SELECT pg_wal_replay_resume()")
    replicas.replica_states_reset()
    connections[alias].close()


def _wait_until_replayed(alias: str) -> None:
    target = routing.primary_position()
    deadline = time.monotonic() + 60
    while (routing.replica_position(alias) or 0) < target:
        assert time.monotonic() < deadline
        time.sleep(0.05)


def _stock(pk: int) -> int:
    return Product.objects.get(pk=pk).stock  # through the router: replica or primary


def _cached(pk: int) -> caching.Computed[int]:
    with routing.request_scope():
        return caching.get_or_compute("t:positions", lambda: _stock(pk), 600, 600)


def test_a_pinned_caller_never_gets_an_entry_read_before_its_pin(replica: str) -> None:
    product = factories.product(shop=factories.shop(), category=factories.category(), stock=10)
    _wait_until_replayed(replica)
    _on_replica(replica, "SELECT pg_wal_replay_pause()")
    stock_adjust(product=product.pk, delta=-8, actor=None)
    pin = routing.primary_position()

    # No namespace names the write: the entry is read on the paused replica.
    assert _cached(product.pk).value == 10

    token = routing.pin_position.set(pin)
    try:
        mine = _cached(product.pk)
    finally:
        routing.pin_position.reset(token)
    assert (mine.value, mine.hit) == (2, False), "recomputed on the primary for the writer"
    # Shared from now on: the newer read replaced the older one.
    assert _cached(product.pk).value == 2

    # A lagging replica's read never overwrites it.
    with routing.request_scope():
        assert routing.read_position() < pin
        caching._compute_and_store("goc:t:positions", lambda: _stock(product.pk), 600, 600, {}, "t")
    assert cache.get("goc:t:positions").value == 2


def test_an_entry_read_before_its_namespaces_last_write_is_stale_for_everyone(
    replica: str,
) -> None:
    product = factories.product(shop=factories.shop(), category=factories.category(), stock=10)
    _wait_until_replayed(replica)

    def load() -> caching.Computed[int]:
        with routing.request_scope():
            return caching.get_or_compute(
                "t:ns", lambda: _stock(product.pk), 600, 600, namespaces=("stock",)
            )

    assert load().value == 10
    _on_replica(replica, "SELECT pg_wal_replay_pause()")
    stock_adjust(product=product.pk, delta=-8, actor=None)  # bumps "stock" at its position
    served = load()
    assert served.stale  # the old entry, while a refresh reads at the write's position
    background.drain()
    assert load().value == 2, "refreshed from the primary: the replica is paused"
