"""PrimaryStickinessMiddleware: who gets pinned to the primary, for how long, and no leaks.

The views below are test scaffolding: they write (or not) on ``default`` and report
the router's decision for a primary-side read. The writes really commit, so these
tests run in transactions of their own (``transaction=True``).
"""

from __future__ import annotations

import json
import threading
import time

import pytest
from django.contrib.auth.decorators import login_not_required
from django.db import transaction
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.test import Client, override_settings
from django.urls import path

from dashboard.middleware import COOKIE
from store import routing
from store.models import Product, Shop
from store.routing import PrimaryReplicaRouter, is_write

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.urls(__name__),
]
# An alias the router can name without a server behind it: only the decision is read.
REPLICAS = override_settings(REPLICA_ALIASES=["replica_test"])


@login_not_required
def write(request: HttpRequest) -> HttpResponse:
    with transaction.atomic():
        Shop.objects.create(name="s", slug=f"s-{time.monotonic_ns()}")
    return HttpResponse(status=int(request.GET.get("status", 200)))


@login_not_required
def write_rolled_back(request: HttpRequest) -> HttpResponse:
    try:
        with transaction.atomic():
            Shop.objects.create(name="s", slug="rolled-back")
            raise RuntimeError("changed my mind")
    except RuntimeError:
        pass
    return HttpResponse()


@login_not_required
def no_write(request: HttpRequest) -> HttpResponse:
    return HttpResponse(str(Shop.objects.using("default").count()))


@login_not_required
def where(request: HttpRequest) -> JsonResponse:
    if request.GET.get("wait"):
        _barrier.wait(timeout=5)
    decisions = {PrimaryReplicaRouter().db_for_read(Product) for _ in range(3)}
    return JsonResponse({"db": sorted(decisions), "pinned": routing.pinned_to_primary.get()})


_barrier = threading.Barrier(2)

urlpatterns = [
    path("write/", write),
    path("write-rolled-back/", write_rolled_back),
    path("no-write/", no_write),
    path("where/", where),
]


def _where(client: Client) -> dict:
    return json.loads(client.get("/where/").content)


@REPLICAS
def test_a_post_that_committed_a_write_pins_the_client_to_the_primary() -> None:
    client = Client()
    assert _where(client) == {"db": ["replica_test"], "pinned": False}
    response = client.post("/write/")
    assert COOKIE in response.cookies
    # STOREOPS_STICKY_SECONDS (5), raised to outlast the usable lag: 5 + 2 + 1 s.
    assert response.cookies[COOKIE]["max-age"] == 8
    assert response.cookies[COOKIE]["httponly"]
    assert _where(client) == {"db": ["default"], "pinned": True}
    assert _where(Client()) == {"db": ["replica_test"], "pinned": False}, "only that client"


@REPLICAS
@pytest.mark.parametrize("status", [200, 303, 409, 422])
def test_the_status_code_does_not_matter_only_the_committed_write(status: int) -> None:
    client = Client()
    assert COOKIE in client.post(f"/write/?status={status}").cookies
    assert _where(client)["db"] == ["default"]


@REPLICAS
@pytest.mark.parametrize(
    ("method", "url"),
    [("post", "/no-write/"), ("post", "/write-rolled-back/"), ("get", "/write/")],
    ids=["post-without-write", "post-whose-write-rolled-back", "get-that-wrote"],
)
def test_no_pin_without_an_unsafe_request_that_committed(method: str, url: str) -> None:
    client = Client()
    response = getattr(client, method)(url)
    assert COOKIE not in response.cookies
    assert _where(client)["db"] == ["replica_test"]


@REPLICAS
def test_a_tampered_cookie_is_ignored() -> None:
    client = Client()
    client.post("/write/")
    value = client.cookies[COOKIE].value
    client.cookies[COOKIE] = value[:-2] + ("AA" if not value.endswith("AA") else "BB")
    assert _where(client) == {"db": ["replica_test"], "pinned": False}
    client.cookies[COOKIE] = ":forged"
    assert _where(client)["db"] == ["replica_test"]


@REPLICAS
@override_settings(
    STOREOPS_STICKY_SECONDS=1, STOREOPS_MAX_REPLICA_LAG=0, STOREOPS_REPLICA_CHECK_SECONDS=0
)
def test_the_pin_is_honoured_until_it_expires() -> None:
    client = Client()
    client.post("/write/")
    assert _where(client)["db"] == ["default"]
    time.sleep(1.3)  # the signature's timestamp is checked against max_age server-side
    assert _where(client)["db"] == ["replica_test"]


@REPLICAS
def test_the_decision_never_leaks_between_requests_or_threads() -> None:
    pinned = Client()
    pinned.post("/write/")
    results: dict[str, dict] = {}

    def call(name: str, client: Client) -> None:
        try:
            results[name] = json.loads(client.get("/where/?wait=1").content)
        finally:
            from django.db import connections

            connections.close_all()

    threads = [
        threading.Thread(target=call, args=("pinned", pinned)),
        threading.Thread(target=call, args=("fresh", Client())),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    # Both requests were inside their views at the same moment (the barrier).
    assert results["pinned"] == {"db": ["default"], "pinned": True}
    assert results["fresh"] == {"db": ["replica_test"], "pinned": False}
    # And nothing stays behind in this thread after a request.
    pinned.get("/where/")
    assert routing.pinned_to_primary.get() is False
    assert routing.request_replica.get() is None


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ('INSERT INTO "store_shop" ("name") VALUES (%s)', True),
        ('  update "store_product" SET stock = 1', True),
        ('DELETE FROM "store_shop"', True),
        ("WITH moved AS (DELETE FROM t RETURNING *) SELECT * FROM moved", True),
        ("EXECUTE storeops_stock_adjust (1, -1)", True),  # prepared: assume it writes
        ("PREPARE storeops_stock_adjust (bigint) AS UPDATE t SET a = $1", False),
        ('SELECT "store_shop"."id" FROM "store_shop" FOR UPDATE', False),
        ("SAVEPOINT s1", False),
        ("SELECT pg_current_wal_lsn()", False),
    ],
)
def test_write_statements_are_recognised(sql: str, expected: bool) -> None:
    assert is_write(sql) is expected


@REPLICAS
def test_the_pin_works_the_same_under_asgi() -> None:
    from asgiref.sync import async_to_sync
    from django.test import AsyncClient

    writer = Client()
    writer.post("/write/")
    client = AsyncClient()
    client.cookies[COOKIE] = writer.cookies[COOKIE].value
    pinned = async_to_sync(client.get)("/where/")
    fresh = async_to_sync(AsyncClient().get)("/where/")
    assert json.loads(pinned.content) == {"db": ["default"], "pinned": True}
    assert json.loads(fresh.content) == {"db": ["replica_test"], "pinned": False}
    assert routing.pinned_to_primary.get() is False
