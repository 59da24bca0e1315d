"""A silent database costs a request its deadline, never more (issue 15).

A real loopback TCP proxy (``tcp_proxy``) sits between the console and a shard or the
replica and is switched to "blackhole": it accepts and then never answers, so kept-open
connections hang and no kernel or server timeout ends the wait. Only the application's
deadline (store/deadlines.py) does.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

import pytest
from django.conf import settings
from django.contrib.auth.decorators import login_not_required
from django.db import close_old_connections, connections
from django.http import HttpRequest, JsonResponse
from django.test import Client
from django.urls import path

from config.urls import urlpatterns as project_urls
from store import deadlines, health, replicas
from store.models import Product
from store.sharding import shard_for_user
from store.tests import factories
from store.tests.tcp_proxy import TcpProxy
from store.tests.test_sharding import make_customer

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.django_db(transaction=True, databases="__all__"),
    pytest.mark.urls(__name__),
]


@login_not_required
def show(request: HttpRequest, pk: int) -> JsonResponse:
    product = Product.objects.get(pk=pk)
    return JsonResponse({"stock": product.stock, "db": product._state.db})


urlpatterns = [*project_urls, path("show/<int:pk>/", show)]


@pytest.fixture(autouse=True)
def _fresh_breakers() -> Iterator[None]:
    deadlines.breakers_reset()
    replicas.replica_states_reset()
    yield
    deadlines.breakers_reset()
    replicas.replica_states_reset()


@contextlib.contextmanager
def _proxied(alias: str) -> Iterator[TcpProxy]:
    conf = connections[alias].settings_dict  # the same dict as settings.DATABASES[alias]
    host, port = conf["HOST"] or "127.0.0.1", conf["PORT"] or 5432
    proxy = TcpProxy(host, int(port))
    connections[alias].close()
    conf["HOST"], conf["PORT"] = "127.0.0.1", str(proxy.port)
    try:
        yield proxy
    finally:
        proxy.close()
        connections[alias].close()
        conf["HOST"], conf["PORT"] = host, port
        deadlines.breakers_reset()


def _request(client: Client, url: str) -> tuple[int, float, bytes]:
    close_old_connections()  # what the WSGI handler does at each request start
    started = time.monotonic()
    response = client.get(url)
    return response.status_code, time.monotonic() - started, response.content


def test_a_blackholed_shard_answers_503_within_its_deadline_then_recovers(viewer_client) -> None:
    user_id = next(uid for uid in range(1, 500) if shard_for_user(uid) == "shard_1")
    make_customer(user_id, value=1_000, events=1)
    with _proxied("shard_1") as proxy:
        url = f"/customers/{user_id}/"
        assert _request(viewer_client, url)[0] == 200  # a kept-open connection to the shard
        limit = settings.STOREOPS_SHARD_TIMEOUT + 1
        proxy.set_mode("blackhole")
        status, took, body = _request(viewer_client, url)
        assert status == 503, status
        assert took < limit, took
        assert b"shard_1" in body
        # Marked down: the next request does not wait at all.
        status, took, _ = _request(viewer_client, url)
        assert status == 503, status
        assert took < 0.5, took
        proxy.set_mode("pass")
        # Back within a probe period or two, on a fresh connection.
        deadline = time.monotonic() + 5
        while (status := _request(viewer_client, url)[0]) != 200:
            assert time.monotonic() < deadline, "the shard stayed marked down"
            time.sleep(0.2)


def test_the_health_probe_reports_a_blackholed_shard_down_within_3_s() -> None:
    with _proxied("shard_0") as proxy:
        proxy.set_mode("blackhole")
        started = time.monotonic()
        snapshot = health.health_snapshot(fresh=True)
        took = time.monotonic() - started
        probe = snapshot.probe("shard_0")
        assert probe is not None
        assert probe.status == "down", probe
        assert snapshot.probe("shard_1").status != "down"
        assert took < 3, took
        assert deadlines.is_down("shard_0"), "the probe marks it down for requests too"


@pytest.mark.replica
def test_a_blackholed_replica_read_falls_back_to_the_primary_within_its_deadline() -> None:
    from store.tests.test_replica import _wait_until_replayed

    if not settings.REPLICA_ALIASES:
        pytest.fail("no replica configured (DATABASE_REPLICA_URLS); CI starts one")
    alias = settings.REPLICA_ALIASES[0]
    product = factories.product(shop=factories.shop(), category=factories.category(), stock=7)
    _wait_until_replayed(alias)
    conf = connections[alias].settings_dict
    # A 1 s deadline keeps the test short; the mechanism is the same.
    with _proxied(alias) as proxy, _deadline(conf, 1.0):
        client = Client()
        status, _, body = _request(client, f"/show/{product.pk}/")
        assert (status, body) == (200, b'{"stock": 7, "db": "' + alias.encode() + b'"}')
        proxy.set_mode("blackhole")
        status, took, body = _request(client, f"/show/{product.pk}/")
        assert status == 200, body
        assert b'"stock": 7' in body
        assert took < 1.0 + deadlines.GRACE_SECONDS + 1, took
        status, took, body = _request(client, f"/show/{product.pk}/")
        assert b'"db": "default"' in body
        assert took < 0.5, took


@contextlib.contextmanager
def _deadline(conf: dict, seconds: float) -> Iterator[None]:
    saved, conf["STOREOPS_DEADLINE"] = conf["STOREOPS_DEADLINE"], seconds
    try:
        yield
    finally:
        conf["STOREOPS_DEADLINE"] = saved
