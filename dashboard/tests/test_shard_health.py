"""The shard-health panel: every database with its status, partial cross-shard figures."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.core.cache import cache
from django.db import connections
from django.test import Client

from store.tests.test_sharding import make_customer, shard_down

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")
HTMX = {"HTTP_HX_REQUEST": "true"}


@pytest.fixture(autouse=True)
def _empty_cache() -> Iterator[None]:
    cache.clear()
    yield
    cache.clear()


def test_the_panel_lists_every_database_with_its_status(viewer_client: Client) -> None:
    make_customer(1, value=12_345)
    response = viewer_client.get("/panels/shard-health/", **HTMX)
    assert response.status_code == 200
    html = response.content.decode()
    assert 'data-panel="shard-health"' in html
    for alias in connections.settings:
        assert f'data-alias="{alias}"' in html
    assert 'data-status="down"' not in html
    assert "Customer 1" in html
    assert "123.45" in html
    assert "Status thresholds" in html
    assert 'data-testid="partial-results"' not in html


def test_a_shard_down_shows_partial_results_with_a_banner(viewer_client: Client) -> None:
    homes = {uid: make_customer(uid, value=uid * 100) for uid in range(1, 11)}
    with shard_down("shard_1"):
        response = viewer_client.get("/panels/shard-health/", **HTMX)
    html = response.content.decode()
    assert response.status_code == 200
    assert 'data-alias="shard_1" data-status="down"' in html
    assert 'data-testid="partial-results"' in html
    assert "shard_1 did not answer" in html
    on_healthy_shard = next(uid for uid, alias in homes.items() if alias == "shard_0")
    assert f"Customer {on_healthy_shard}" in html


def test_outsiders_cannot_see_the_panel(outsider_client: Client) -> None:
    assert outsider_client.get("/panels/shard-health/", **HTMX).status_code == 403


def test_customer_figures_are_shared_until_customers_change_or_a_shard_fails() -> None:
    from store.caching import bump_now
    from store.health import CACHE_KEY
    from store.selectors.shard_health import shard_health_overview

    make_customer(1, value=100)
    assert [c.user_id for c in shard_health_overview().top_customers.value] == [1]
    make_customer(2, value=500)  # written without bumping "customers": still shared
    assert [c.user_id for c in shard_health_overview().top_customers.value] == [1]
    bump_now("customers")
    assert [c.user_id for c in shard_health_overview().top_customers.value] == [2, 1]
    with shard_down("shard_1"):
        cache.delete(CACHE_KEY)  # the probes notice the outage on their next round
        overview = shard_health_overview()
    assert overview.top_customers.partial
    assert "shard_1" in overview.partial_shards
