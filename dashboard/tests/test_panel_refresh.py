"""Panels refresh off the request path: stale data at once, the refresh in the background.

Transactional tests: the refresh runs on its own thread and database connection,
which only sees committed rows.
"""

from __future__ import annotations

import logging
import re

import pytest
from django.test import Client, override_settings
from django.urls import reverse

from store import caching
from store import refresh as background
from store.models import Product
from store.tests import factories

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")
HX = {"HTTP_HX_REQUEST": "true"}


@pytest.fixture
def store_rows() -> dict[str, Product]:
    shop, category = factories.shop("Main"), factories.category("Tools")
    low = factories.product(shop=shop, category=category, stock=1, name="Low hammer")
    plenty = factories.product(shop=shop, category=category, stock=80, name="Big saw")
    return {"low": low, "plenty": plenty}


def _low_stock(client: Client) -> str:
    return client.get("/panels/low-stock/", **HX).content.decode()


def _cache_state(body: str) -> str:
    found = re.search(r'data-cache="([^"]+)"', body)
    assert found, "no cache state in the panel"
    return found.group(1)


@override_settings(STOREOPS_REFRESH_MIN_INTERVAL=0)  # the data shown is older than that
def test_another_users_write_shows_stale_data_at_once_then_the_refresh(
    viewer_client: Client, store_rows: dict[str, Product], caplog: pytest.LogCaptureFixture
) -> None:
    first = _low_stock(viewer_client)
    assert "Low hammer" in first
    assert "Big saw" not in first
    # Someone else's write (not through this client: the viewer is not pinned).
    Product.objects.filter(pk=store_rows["plenty"].pk).update(stock=0)
    caching.bump_now("stock", "lowstock")
    with (
        override_settings(STOREOPS_SLOW_QUERY_MS=0),
        caplog.at_level(logging.WARNING, logger="store.querylog"),
    ):
        stale = _low_stock(viewer_client)
        assert background.drain(10)
    assert "Big saw" not in stale
    assert _cache_state(stale) == "stale data (refreshing)"
    # ...and asks for the refreshed data in a second, not a whole poll later.
    assert 'data-testid="repoll"' in stale
    # The refresh's SQL is tagged with its panel, from a refresh thread.
    tagged = [r for r in caplog.records if "slow query panel=low-stock" in r.getMessage()]
    assert tagged
    assert all(r.threadName.startswith("storeops-refresh") for r in tagged)
    # The stale fragment was not kept: the next request renders the refreshed data.
    fresh = _low_stock(viewer_client)
    assert "Big saw" in fresh
    assert _cache_state(fresh) == "fragment miss, data hit"
    assert 'data-testid="repoll"' not in fresh


@override_settings(STOREOPS_REFRESH_MIN_INTERVAL=0.5)
def test_young_stale_data_is_refreshed_when_the_interval_is_up_and_the_page_does_not_re_ask(
    viewer_client: Client, store_rows: dict[str, Product]
) -> None:
    assert "Big saw" not in _low_stock(viewer_client)  # computed now: younger than 0.5 s
    Product.objects.filter(pk=store_rows["plenty"].pk).update(stock=0)
    caching.bump_now("stock", "lowstock")
    stale = _low_stock(viewer_client)
    assert "Big saw" not in stale
    assert _cache_state(stale) == "stale data (due)"
    # Shown data under the interval old is what the next poll would show anyway: an
    # immediate re-ask would only make every viewer ask every second under writes.
    assert 'data-testid="repoll"' not in stale
    assert background.drain(5)  # the refresh that was due
    fresh = _low_stock(viewer_client)
    assert "Big saw" in fresh
    assert _cache_state(fresh) == "fragment miss, data hit"


def test_the_writer_sees_its_own_write_at_once(
    operator_client: Client, store_rows: dict[str, Product]
) -> None:
    plenty = store_rows["plenty"]
    assert "Big saw" not in _low_stock(operator_client)
    url = reverse("store-product-adjust", args=[plenty.pk])
    key = re.search(
        r'name="idempotency_key" value="([^"]*)"', operator_client.get(url, **HX).content.decode()
    )
    assert key
    data = {"delta": "-79", "reason": "counted", "idempotency_key": key.group(1)}
    assert operator_client.post(url, data, **HX).status_code == 200
    # Pinned to the primary after its write: never served the pre-write data.
    after = _low_stock(operator_client)
    assert "Big saw" in after
    assert _cache_state(after) == "miss"
