"""The customer page reads one shard; a dead shard costs only its own customers' pages."""

from concurrent.futures import ThreadPoolExecutor

import pytest
from django.db import connections
from django.http import HttpResponse
from django.test import Client

from store.sharding import shard_for_user
from store.tests import factories
from store.tests.test_sharding import make_customer, shard_down

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")


def _two_customers_on_different_shards() -> tuple[int, int]:
    first = 1
    other = next(uid for uid in range(2, 500) if shard_for_user(uid) != shard_for_user(first))
    make_customer(first, value=12_345, events=3)
    make_customer(other, value=500, events=1)
    return first, other


def test_profile_events_and_orders(viewer_client: Client, django_assert_max_num_queries) -> None:
    user_id, _ = _two_customers_on_different_shards()
    shop = factories.shop("Main")
    product = factories.product(shop=shop, category=factories.category(), price=1500)
    factories.order(shop=shop, lines=[(product, 2)], paid=True, customer_id=user_id)
    viewer_client.get("/")  # session and permission caches warm
    with django_assert_max_num_queries(8):
        response = viewer_client.get(f"/customers/{user_id}/")
    assert response.status_code == 200
    html = response.content.decode()
    assert f"Customer {user_id}" in html
    assert "123.45" in html  # lifetime value, from the owning shard
    assert shard_for_user(user_id) in html
    assert "30.00" in html  # the order's total, from the primary
    assert html.count("<td>view</td>") + html.count("<td>purchase</td>") >= 1


def _get_in_worker_thread(client: Client, url: str) -> HttpResponse:
    """As a server thread would: its own database connections, closed afterwards."""

    def fetch() -> HttpResponse:
        try:
            return client.get(url)
        finally:
            connections.close_all()

    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(fetch).result()


def test_a_dead_shard_affects_only_its_own_customers(viewer_client: Client) -> None:
    down_user, up_user = _two_customers_on_different_shards()
    with shard_down(shard_for_user(down_user)):
        healthy = _get_in_worker_thread(viewer_client, f"/customers/{up_user}/")
        broken = _get_in_worker_thread(viewer_client, f"/customers/{down_user}/")
    assert healthy.status_code == 200
    assert "5.00" in healthy.content.decode()  # the other shard's customer, complete
    assert broken.status_code == 503
    assert "is not answering right now" in broken.content.decode()


def test_unknown_customer_is_404(viewer_client: Client) -> None:
    assert viewer_client.get("/customers/999999/").status_code == 404


def test_needs_the_dashboard_permission(outsider_client: Client) -> None:
    assert outsider_client.get("/customers/1/").status_code == 403
