"""Redis in the health view: /readyz and the shard-health panel show it, and an
outage makes readiness degraded (not down) while every page still answers."""

from __future__ import annotations

import pytest
from django.test import Client, override_settings

from dashboard.panels import PANELS
from store.tests import factories
from store.tests.redis_server import RedisServer, own_redis  # noqa: F401 (a fixture)
from store.tests.test_sharding import make_customer

# The shard-health panel reads every shard from threads.
pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")


def test_readyz_names_the_embedded_cache(client: Client, settings) -> None:
    if settings.REDIS_URL:
        pytest.skip("the embedded run's local-memory cache")
    cache = client.get("/readyz").json()["cache"]
    assert cache == {
        "backend": "local memory",
        "status": "ok",
        "reachable": True,
        "latency_ms": None,
        "used_memory": None,
        "max_memory": None,
        "evicted_keys": None,
        "connected_clients": None,
        "breaker_open": False,
        "breaker_last_opened_at": None,
    }


@pytest.mark.redis
def test_a_stopped_redis_shows_red_and_degraded_and_pages_still_answer(
    own_redis: RedisServer,  # noqa: F811
    viewer_client: Client,
    client: Client,
    operator_client: Client,
) -> None:
    product = factories.product(shop=factories.shop(), category=factories.category(), stock=3)
    make_customer(7, value=70)
    config = {
        "default": {
            "BACKEND": "store.cache_backend.BreakerRedisCache",
            "LOCATION": own_redis.url,
            "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 0.5, "SOCKET_TIMEOUT": 0.5},
        }
    }
    with override_settings(CACHES=config, REDIS_URL=own_redis.url):
        ready = client.get("/readyz").json()
        assert ready["cache"]["backend"] == "redis"
        assert ready["cache"]["status"] == "ok"
        # Everything the panel shows of Redis: memory against maxmemory, evictions,
        # clients, the breaker and when it last opened (never, here).
        assert ready["cache"]["used_memory"] > 0
        assert ready["cache"]["max_memory"] == 0  # this test server sets no limit
        assert ready["cache"]["evicted_keys"] == 0
        assert ready["cache"]["connected_clients"] >= 1
        assert ready["cache"]["breaker_last_opened_at"] is None
        panel = viewer_client.get("/panels/shard-health/", HTTP_HX_REQUEST="true")
        assert 'data-testid="cache-health" data-status="ok"' in panel.content.decode()
        own_redis.kill()
        response = client.get("/readyz")
        assert response.status_code == 200
        assert response.json()["status"] == "degraded"
        assert response.json()["cache"]["reachable"] is False
        panel = viewer_client.get("/panels/shard-health/", HTTP_HX_REQUEST="true")
        body = panel.content.decode()
        assert panel.status_code == 200
        assert 'data-testid="cache-health" data-status="down"' in body
        assert "Redis does not answer" in body
        # Every page still answers: the console works without its cache.
        pages = [
            "/",
            "/products/",
            "/orders/",
            "/stock/ledger/",
            "/customers/7/",
            *(f"/panels/{name}/" for name in PANELS),
        ]
        for url in pages:
            assert viewer_client.get(url).status_code == 200, url
        assert operator_client.get(f"/products/{product.pk}/adjust/").status_code == 200
        assert operator_client.get(f"/products/{product.pk}/edit/").status_code == 200
