"""Against a real streaming replica (scripts/pg_replica.py): lag, stickiness, outages.

Replay on the replica is paused with ``pg_wal_replay_pause()`` to make lag visible
on demand. The views below are scaffolding: one adjusts stock through the real
service, the other reads a product the way any page does (through the router) and
says which database answered.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.conf import settings
from django.contrib.auth.decorators import login_not_required
from django.db import close_old_connections, connections
from django.db.models.expressions import RawSQL
from django.http import HttpRequest, JsonResponse
from django.test import Client, override_settings
from django.urls import path

from scripts import pg_replica  # the same code CI uses to start the replica
from store import deadlines, replicas, routing
from store.health import health_snapshot
from store.models import Product
from store.replicas import healthy_replicas
from store.services.stock import stock_adjust
from store.tests import factories

pytestmark = [
    pytest.mark.replica,
    pytest.mark.postgres,
    pytest.mark.django_db(transaction=True, databases="__all__"),
    pytest.mark.urls(__name__),
]


@login_not_required
def adjust(request: HttpRequest, pk: int) -> JsonResponse:
    change = stock_adjust(product=pk, delta=int(request.POST["delta"]), actor=None)
    return JsonResponse({"stock": change.product.stock})


@login_not_required
def show(request: HttpRequest, pk: int) -> JsonResponse:
    product = Product.objects.get(pk=pk)
    return JsonResponse({"stock": product.stock, "db": product._state.db})


@login_not_required
def slow_show(request: HttpRequest, pk: int) -> JsonResponse:
    """A read that takes a while on the server: the replica can die while it runs."""
    slept = RawSQL("(SELECT 1 FROM pg_sleep(%s))", (float(request.GET["sleep"]),))
    product = Product.objects.annotate(slept=slept).get(pk=pk)
    return JsonResponse({"stock": product.stock})


urlpatterns = [
    path("adjust/<int:pk>/", adjust),
    path("show/<int:pk>/", show),
    path("slow/<int:pk>/", slow_show),
]


def _on_replica(alias: str, sql: str) -> object:
    with deadlines.probe_connect(alias) as conn:
        row = conn.execute(sql).fetchone()
        return row[0] if row else None


def _wait_until_replayed(alias: str, timeout: float = 90) -> None:
    with connections["default"].cursor() as cursor:
        cursor.execute("SELECT pg_current_wal_lsn()::text")
        lsn = cursor.fetchone()[0]
    deadline = time.monotonic() + timeout
    while not routing.replica_has_replayed(alias, lsn):
        assert time.monotonic() < deadline, f"{alias} did not replay up to {lsn}"
        time.sleep(0.1)
    connections[alias].close()


@pytest.fixture
def replica() -> Iterator[str]:
    if not settings.REPLICA_ALIASES:
        pytest.fail(
            "no replica configured: start one with scripts/pg_replica.py start and set "
            "DATABASE_REPLICA_URLS (CI does this)"
        )
    alias = settings.REPLICA_ALIASES[0]
    replicas.replica_states_reset()
    _on_replica(alias, "SELECT pg_wal_replay_resume()")
    _wait_until_replayed(alias)
    yield alias
    _on_replica(alias, "SELECT pg_wal_replay_resume()")
    replicas.replica_states_reset()
    connections[alias].close()


@pytest.fixture
def product() -> Product:
    return factories.product(shop=factories.shop(), category=factories.category(), stock=10)


def _show(client: Client, pk: int) -> dict:
    # What Django's WSGI handler does at every request start (the test client skips it):
    # persistent connections get their once-per-request health check again.
    close_old_connections()
    return json.loads(client.get(f"/show/{pk}/").content)


def test_the_replica_holds_the_test_database_and_serves_reads(replica, product) -> None:
    _wait_until_replayed(replica)
    assert _on_replica(replica, "SELECT current_database()") == settings.DATABASES[replica]["NAME"]
    assert _on_replica(replica, "SELECT pg_is_in_recovery()") is True
    assert _show(Client(), product.pk) == {"stock": 10, "db": replica}


@override_settings(STOREOPS_MAX_REPLICA_LAG=600)
def test_a_writer_reads_its_write_while_others_see_the_lagging_replica(replica, product) -> None:
    _wait_until_replayed(replica)
    _on_replica(replica, "SELECT pg_wal_replay_pause()")
    writer, other = Client(), Client()

    response = writer.post(f"/adjust/{product.pk}/", {"delta": "-3"})
    assert response.status_code == 200
    assert response.cookies["storeops_primary"].value  # carries the primary's LSN

    assert _show(writer, product.pk) == {"stock": 7, "db": "default"}
    assert _show(other, product.pk) == {"stock": 10, "db": replica}, "replay is paused"

    _on_replica(replica, "SELECT pg_wal_replay_resume()")
    _wait_until_replayed(replica)
    # The replica has passed the writer's LSN: the pin is dropped before it expires.
    response = writer.get(f"/show/{product.pk}/")
    assert json.loads(response.content) == {"stock": 7, "db": replica}
    assert response.cookies["storeops_primary"]["max-age"] == 0
    assert _show(other, product.pk) == {"stock": 7, "db": replica}


@override_settings(STOREOPS_MAX_REPLICA_LAG=600, STOREOPS_STICKY_SECONDS=1)
def test_the_pin_outlasts_its_timer_while_a_usable_replica_is_behind(replica, product) -> None:
    _wait_until_replayed(replica)
    _on_replica(replica, "SELECT pg_wal_replay_pause()")
    writer = Client()
    writer.post(f"/adjust/{product.pk}/", {"delta": "5"})
    assert _show(writer, product.pk) == {"stock": 15, "db": "default"}
    time.sleep(1.3)
    # Past STOREOPS_STICKY_SECONDS, but the replica is within the allowed lag and
    # before the write: the position holds the pin.
    assert _show(writer, product.pk) == {"stock": 15, "db": "default"}


@override_settings(
    STOREOPS_MAX_REPLICA_LAG=0.5, STOREOPS_STICKY_SECONDS=1, STOREOPS_REPLICA_CHECK_SECONDS=0
)
def test_after_the_pin_expires_a_replica_still_behind_is_too_far_behind_to_use(
    replica, product
) -> None:
    _wait_until_replayed(replica)
    _on_replica(replica, "SELECT pg_wal_replay_pause()")
    writer = Client()
    writer.post(f"/adjust/{product.pk}/", {"delta": "5"})
    time.sleep(2.2)  # the pin's bound: 1 s, at least the lag limit plus a check plus 1 s
    assert _show(writer, product.pk) == {"stock": 15, "db": "default"}
    assert _show(Client(), product.pk) == {"stock": 15, "db": "default"}


@override_settings(STOREOPS_MAX_REPLICA_LAG=0.5, STOREOPS_REPLICA_CHECK_SECONDS=0)
def test_a_replica_lagging_past_the_limit_is_skipped_then_used_again(replica, product) -> None:
    assert healthy_replicas() == [replica]
    _on_replica(replica, "SELECT pg_wal_replay_pause()")
    stock_adjust(product=product.pk, delta=1, actor=None)
    time.sleep(1.0)
    assert healthy_replicas() == []
    assert _show(Client(), product.pk) == {"stock": 11, "db": "default"}
    assert health_snapshot(fresh=True).probe(replica).status == "critical"

    _on_replica(replica, "SELECT pg_wal_replay_resume()")
    _wait_until_replayed(replica)
    assert healthy_replicas() == [replica]
    assert _show(Client(), product.pk) == {"stock": 11, "db": replica}


def _panel_status(client: Client, alias: str) -> str | None:
    html = client.get("/panels/shard-health/", HTTP_HX_REQUEST="true").content.decode()
    match = re.search(rf'data-alias="{alias}" data-status="(\w+)"', html)
    return match[1] if match else None


@pytest.mark.urls("config.urls")
def test_the_panel_shows_a_dead_replica_within_two_seconds(replica, viewer_client) -> None:
    port = int(settings.DATABASES[replica]["PORT"])
    assert _panel_status(viewer_client, replica) in {"ok", "warn"}
    pg_replica.halt(port)
    try:
        started = time.monotonic()
        while _panel_status(viewer_client, replica) != "down":
            assert time.monotonic() - started < 2.0, "the panel still shows the replica up"
            time.sleep(0.1)
    finally:
        pg_replica.resume(port)
    deadline = time.monotonic() + 90
    while _panel_status(viewer_client, replica) not in {"ok", "warn"}:
        assert time.monotonic() < deadline, "the panel never showed the replica back"
        time.sleep(0.5)


def test_replica_down_mid_run_reads_fall_back_then_return(replica, product) -> None:
    port = int(settings.DATABASES[replica]["PORT"])
    client = Client()
    assert _show(client, product.pk)["db"] == replica
    pg_replica.halt(port)
    try:
        # At once, before any cached health verdict expires: every request succeeds.
        for _ in range(5):
            assert _show(client, product.pk) == {"stock": 10, "db": "default"}
        assert health_snapshot(fresh=True).probe(replica).status == "down"
    finally:
        pg_replica.resume(port)
    deadline = time.monotonic() + 90  # it replays what the primary wrote meanwhile
    while _show(client, product.pk)["db"] != replica:
        assert time.monotonic() < deadline, "reads did not return to the recovered replica"
        time.sleep(0.3)
    assert health_snapshot(fresh=True).probe(replica).status in {"ok", "warn"}


def test_a_read_in_flight_when_the_replica_dies_is_retried_on_the_primary(replica, product) -> None:
    """Issue 15: such a read answered 500. Now it runs again on the primary (once,
    being a read outside a transaction), and the replica is skipped from then on."""
    port = int(settings.DATABASES[replica]["PORT"])
    client = Client()
    assert _show(client, product.pk)["db"] == replica  # a kept-open replica connection

    def halt_while_the_read_runs() -> None:
        deadline = time.monotonic() + 10
        while not _on_replica(
            replica,
            "SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%%pg_sleep%%'"
            " AND pid <> pg_backend_pid()",
        ):
            assert time.monotonic() < deadline, "the slow read never reached the replica"
            time.sleep(0.05)
        pg_replica.halt(port)  # a fast shutdown ends the read mid-flight

    try:
        with ThreadPoolExecutor(1) as pool:
            halting = pool.submit(halt_while_the_read_runs)
            close_old_connections()
            response = client.get(f"/slow/{product.pk}/?sleep=3")
            halting.result()
        assert response.status_code == 200, response.content
        assert json.loads(response.content) == {"stock": 10}
        # Marked down: the next read goes straight to the primary.
        assert _show(client, product.pk) == {"stock": 10, "db": "default"}
    finally:
        if not pg_replica.is_up(port):
            pg_replica.resume(port)
