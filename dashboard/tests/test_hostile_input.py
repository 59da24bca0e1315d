"""Hostile input answers 4xx with a message, never 500 (issue 15, item 4)."""

from __future__ import annotations

import random

import pytest
from django.contrib.auth.models import User
from django.test import Client

from dashboard.panels import PANELS

# Every database: the shard-health panel and customer pages reach the shards.
pytestmark = pytest.mark.django_db(databases="__all__")

PANEL_NAMES = [
    "category-stats",
    "category-groups",
    "rank-window",
    "low-stock",
    "trending",
    "shop-activity",
    "shard-health",
    "outbox",
    # Issue 12 (added to the contract's eight; README lists them).
    "headline",
    "sales-series",
    "stock-series",
    "ops-series",
]


def test_the_contract_names_every_panel() -> None:
    assert sorted(PANEL_NAMES) == sorted(PANELS)


@pytest.mark.parametrize("name", PANEL_NAMES)
def test_a_malformed_current_url_answers_without_pushing(viewer_client: Client, name: str) -> None:
    response = viewer_client.get(
        f"/panels/{name}/",
        headers={
            "HX-Request": "true",
            "HX-Trigger": f"{name}-controls",
            "HX-Current-URL": "http://[::1",
        },
    )
    assert response.status_code == 200
    assert f'data-panel="{name}"' in response.content.decode()
    assert "HX-Push-Url" not in response


@pytest.mark.parametrize("user_id", ["18446744073709551616", "9223372036854775808", "9" * 40])
def test_an_out_of_range_customer_id_is_not_found(viewer_client: Client, user_id: str) -> None:
    response = viewer_client.get(f"/customers/{user_id}/")
    assert response.status_code == 404


FORM_UTF16 = "application/x-www-form-urlencoded; charset=utf-16"


def csrf_client(user: User | None = None) -> tuple[Client, str]:
    """A client that enforces CSRF like a browser, with its token: the checks read the
    body first, and Django's own error pages read it again (the 500 of issue 15)."""
    client = Client(enforce_csrf_checks=True, raise_request_exception=False)
    if user is not None:
        client.force_login(user)
    client.get("/accounts/login/")
    return client, client.cookies["csrftoken"].value


def test_an_anonymous_utf16_login_post_is_a_clear_400(db: None) -> None:
    client, token = csrf_client()
    response = client.post(
        "/accounts/login/",
        f"username=a&password=b&csrfmiddlewaretoken={token}",
        content_type=FORM_UTF16,
        headers={"X-CSRFToken": token},
    )
    assert response.status_code == 400
    assert "must be UTF-8 encoded" in response.content.decode()


def test_a_utf16_action_post_is_a_clear_400(operator: User) -> None:
    client, token = csrf_client(operator)
    response = client.post(
        "/products/1/adjust/",
        "delta=1&reason=x&idempotency_key=k",
        content_type=FORM_UTF16,
        headers={"X-CSRFToken": token, "HX-Request": "true"},
    )
    assert response.status_code == 400
    assert "must be UTF-8 encoded" in response.content.decode()


def test_too_many_form_fields_is_a_clear_400(operator: User) -> None:
    client, token = csrf_client(operator)
    body = "&".join(f"f{n}=1" for n in range(1200))
    response = client.post(
        "/products/1/adjust/",
        body,
        content_type="application/x-www-form-urlencoded",
        headers={"X-CSRFToken": token},
    )
    assert response.status_code == 400
    assert "DATA_UPLOAD_MAX_NUMBER_FIELDS" in response.content.decode()


def test_a_multipart_body_without_boundary_is_a_clear_400(operator: User) -> None:
    client, token = csrf_client(operator)
    response = client.generic(
        "POST",
        "/products/1/adjust/",
        b"--x\r\n",
        "multipart/form-data",
        headers={"X-CSRFToken": token},
    )
    assert response.status_code == 400
    assert "Invalid boundary in multipart" in response.content.decode()


# --- A bounded fuzz of every route ---------------------------------------------------

# Each route with a "{}" for its id; the ids include real ones, filled in by the test.
ROUTES = {
    "dashboard-index": "/",
    "store-product-list": "/products/",
    "store-order-list": "/orders/",
    "store-ledger-list": "/stock/ledger/",
    "store-product-adjust": "/products/{}/adjust/",
    "store-product-edit": "/products/{}/edit/",
    "store-price-change": "/products/prices/",
    "store-order-pay": "/orders/{}/pay/",
    "store-order-cancel": "/orders/{}/cancel/",
    "store-outbox-requeue": "/outbox/{}/requeue/",
    "store-customer-detail": "/customers/{}/",
    "dashboard-panel": "/panels/{}/",
    "dashboard-query-log": "/inspector/{}/",
    "dashboard-query-explain": "/inspector/{}/0/explain/",
    "api-trending": "/api/trending.json",
    "health-liveness": "/healthz",
    "health-readiness": "/readyz",
    "login": "/accounts/login/",
    "logout": "/accounts/logout/",
    "admin": "/admin/",
}
ODD_IDS = ["0", "1", "2", "9223372036854775807", "9223372036854775808", "18446744073709551616"]
ODD_IDS += ["9" * 40, "00000000000000000001", "abc", "%00", "%ff", "a" * 300, "-1"]
ODD_QUERIES = [
    "",
    "?page=99999999999999999999",
    "?page=-1&per_page=100000",
    "?sort=;DROP&sort=name",
    "?sort=" + "-" * 50,
    "?q=%00%ff%fe",
    "?q=" + "x" * 5000,
    "?_export=xlsx&price_min=NaN",
    "?_export=csv&stock_max=1e309",
    "?_export=json&created_after=9999-99-99",
    "?low-stock-threshold=1e309&rank-window-size=-5&trending-window=zz",
    "?category-groups-min_avg=99999999999999999999999",
    "?analyze=1&analyze=maybe",
    "?%ff=%fe&=&&==",
]
ODD_HEADERS: list[dict[str, str]] = [
    {},
    {"HX-Request": "true"},
    {"HX-Request": "true", "HX-Current-URL": "http://[::1"},
    {"HX-Request": "true", "HX-Current-URL": "http://[", "HX-Trigger": "{panel}-controls"},
    {"HX-Request": "true", "HX-Current-URL": "/%ff?%zz", "HX-Trigger": "{panel}-controls"},
    {"HX-Request": "true", "HX-Current-URL": "::::", "HX-Trigger": "{panel}-controls-x"},
    {"HX-Request": "yes", "HX-History-Restore-Request": "true", "HX-Target": "\x7f"},
    {"Accept": "application/json", "If-None-Match": '"x"', "Range": "bytes=9-1"},
    {"Idempotency-Key": "k" * 500, "X-Forwarded-For": "not-an-ip"},
]
ODD_BODIES: list[tuple[str, bytes]] = [
    ("application/x-www-form-urlencoded", b"delta=abc&reason=x&idempotency_key=k"),
    ("application/x-www-form-urlencoded", b"delta=99999999999999999999999&idempotency_key=x"),
    ("application/x-www-form-urlencoded", b"delta=-1e9&reason=%00&idempotency_key=%ff"),
    ("application/x-www-form-urlencoded", b"price=NaN&version=-1&idempotency_key=" + b"k" * 300),
    ("application/x-www-form-urlencoded", b"\xff\xfe\x00=\x00&&=&=="),
    ("application/x-www-form-urlencoded; charset=utf-16", b"delta=1&reason=x"),
    ("application/x-www-form-urlencoded; charset=bogus", b"delta=1"),
    ("multipart/form-data", b"--x\r\nno boundary declared"),
    ("multipart/form-data; boundary=xx; charset=utf-16", b"--xx\r\n\r\nbroken"),
    ("application/json", b'{"delta": 1'),
    ("text/plain", b"\x00" * 100),
    ("application/x-www-form-urlencoded", b"&".join(b"f%d=1" % n for n in range(1500))),
]
FUZZ_REQUESTS = 400


def test_fuzz_every_route_answers_below_500(
    superuser: User, operator: User, viewer: User, products_and_orders: tuple[int, int]
) -> None:
    """A seeded, bounded random walk over the routes, users, ids, headers and bodies."""
    from django.urls import URLPattern, URLResolver, get_resolver

    named = set()
    for entry in get_resolver().url_patterns:
        if isinstance(entry, URLResolver) and entry.namespace != "admin":
            named |= {e.name for e in entry.url_patterns if isinstance(e, URLPattern)}
        elif isinstance(entry, URLPattern):
            named.add(entry.name)
    assert named - {None} <= set(ROUTES), named - set(ROUTES)  # every route is fuzzed

    product_id, order_id = products_and_orders
    ids = [*ODD_IDS, str(product_id), str(order_id)]
    clients = [csrf_client(user) for user in (superuser, operator, viewer, None)]
    rng = random.Random(15)  # seeded: a failure reproduces
    failures = []
    for _ in range(FUZZ_REQUESTS):
        client, token = rng.choice(clients)
        route = rng.choice(list(ROUTES.values()))
        panel = rng.choice(PANEL_NAMES)
        value = panel if route.startswith("/panels/") and rng.random() < 0.7 else rng.choice(ids)
        url = route.format(value) + rng.choice(ODD_QUERIES)
        headers = {k: v.format(panel=panel) for k, v in rng.choice(ODD_HEADERS).items()}
        if rng.random() < 0.8:
            headers["X-CSRFToken"] = token
        if rng.random() < 0.5:
            response = client.get(url, headers=headers)
        else:
            content_type, body = rng.choice(ODD_BODIES)
            # generic(): the body goes out as these bytes, whatever charset it declares.
            response = client.generic("POST", url, body, content_type, headers=headers)
        if response.status_code >= 500:
            method = response.request["REQUEST_METHOD"]
            failures.append((method, url, headers, response.status_code))
    assert failures == []


@pytest.fixture
def products_and_orders() -> tuple[int, int]:
    from store.tests import factories as f

    shop, category = f.shop(), f.category()
    product = f.product(shop=shop, category=category, stock=3)
    order = f.order(shop=shop, lines=[(product, 1)])
    return product.pk, order.pk
