"""Redis in the health view: /readyz and the shard-health panel show it, and an
outage makes readiness degraded (not down) while every page still answers."""

from __future__ import annotations

import pytest
from django.test import Client, override_settings

from store.tests.redis_server import RedisServer, own_redis  # noqa: F401 (a fixture)

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
        "breaker_open": False,
    }


@pytest.mark.redis
def test_a_stopped_redis_shows_red_and_degraded_and_pages_still_answer(
    own_redis: RedisServer,  # noqa: F811
    viewer_client: Client,
    client: Client,
) -> None:
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
        assert viewer_client.get("/").status_code == 200
