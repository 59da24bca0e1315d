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


def test_every_alias_connection_carries_its_timeouts() -> None:
    """What the server and libpq were really given, on live request connections."""
    for alias in settings.DATABASES:
        connection = connections[alias]
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT setting::int FROM pg_settings"
                " WHERE name IN ('lock_timeout', 'statement_timeout') ORDER BY name"
            )
            lock_ms, statement_ms = (row[0] for row in cursor.fetchall())
        params = connection.connection.info.get_parameters()
        assert params["tcp_user_timeout"] == "10000", alias
        assert params["keepalives"] == "1", alias
        assert int(params["connect_timeout"]) > 0, alias
        want = connection.settings_dict["STOREOPS_DEADLINE"]
        assert want > 0, alias
        assert statement_ms == int(want * 1000), alias
        if not alias.startswith("replica_"):  # replicas take no write locks
            assert lock_ms == settings.STOREOPS_LOCK_TIMEOUT * 1000, alias
        assert deadlines.seconds_for(alias) == want + deadlines.GRACE_SECONDS, alias


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


def test_a_cross_shard_read_through_a_parked_connection_to_a_silent_shard_keeps_its_budget() -> (
    None
):
    """A connection parked by one scatter-gather (store/sharding.py) whose shard then
    goes silent: the next read still answers within its budget, partial, and the
    top customers page still shows the shard that answers."""
    from store.selectors.customers import top_customers_by_lifetime_value

    homes = {uid: make_customer(uid, value=uid) for uid in range(1, 21)}
    with _proxied("shard_1") as proxy:
        assert not top_customers_by_lifetime_value().partial  # parks one through the proxy
        proxy.set_mode("blackhole")
        started = time.monotonic()
        top = top_customers_by_lifetime_value(limit=50)
        took = time.monotonic() - started
        assert set(top.failed) == {"shard_1"}
        assert {c.user_id for c in top.value} == {u for u, a in homes.items() if a == "shard_0"}
        assert took < settings.STOREOPS_SHARD_TIMEOUT + 0.5, took


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


@pytest.mark.parametrize("figures", ["cold", "cached"])
def test_the_shard_health_panel_renders_within_one_probe_deadline_while_a_shard_is_silent(
    viewer_client, figures: str
) -> None:
    """Its parts run side by side under one budget: the probes (cut at the probe
    deadline), the cross-shard figures and the Redis probe, not one after the other
    (issue 15 measured about 6 s: a probe deadline plus two scatter-gathers)."""
    from django.core.cache import cache

    from store.selectors.shard_health import shard_health_overview

    user_id = next(uid for uid in range(1, 500) if shard_for_user(uid) == "shard_1")
    make_customer(user_id, value=1_000, events=1)
    url = "/panels/shard-health/"
    htmx = {"HTTP_HX_REQUEST": "true"}
    cache.clear()
    with _proxied("shard_1") as proxy:
        close_old_connections()
        # Kept-open connections to the shard (the probes' own) and, for "cached", the
        # cross-shard figures kept from this render.
        assert viewer_client.get(url, **htmx).status_code == 200
        proxy.set_mode("blackhole")
        if figures == "cold":
            cache.clear()  # no snapshot, panel or figures: every part asks the shard
            close_old_connections()
            started = time.monotonic()
            response = viewer_client.get(url, **htmx)
            took = time.monotonic() - started
            assert response.status_code == 200
            assert 'data-alias="shard_1" data-status="down"' in response.content.decode()
        else:
            cache.delete(health.CACHE_KEY)  # the figures stay cached
            started = time.monotonic()
            overview = shard_health_overview()
            took = time.monotonic() - started
            assert overview.snapshot.probe("shard_1").status == "down"
            assert "shard_1" in overview.partial_shards  # not the figures from before
        assert took < deadlines.PROBE_DEADLINE_S + 0.5, took
    cache.clear()


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


def test_a_watched_block_left_by_generator_exit_is_not_cut_later() -> None:
    """A streamed export whose client goes away leaves its watched block through
    GeneratorExit: its descriptor (soon another connection's) must not be cut."""
    import socket

    ours, peer = socket.socketpair()
    try:

        def stream():
            with deadlines.watched("default", ours.fileno(), 0.2):
                yield b"first block"
                yield b"never sent"

        chunks = stream()
        assert next(chunks) == b"first block"
        chunks.close()  # what Django does when the client disconnects
        time.sleep(0.2 + 5 * deadlines.WATCH_INTERVAL)
        ours.sendall(b"still open")  # the watchdog did not shut it down
        assert peer.recv(16) == b"still open"
    finally:
        ours.close()
        peer.close()
