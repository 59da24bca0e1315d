"""Batched version bumps: a burst costs one bump per window; nobody reads around it.

"Seen by others" reads the counter straight from the cache, as another process's
reader does before this process flushes anything.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.conf import settings
from django.core.cache import cache
from django.db import connection
from django.test import Client, override_settings
from django.urls import reverse

from store import caching
from store.models import Product
from store.tests import factories

ROOT = Path(settings.BASE_DIR)
# bump() waits for the caller's commit, so it needs the database; every test here
# commits for real.
pytestmark = pytest.mark.django_db(transaction=True)


def seen_by_others(namespace: str) -> int:
    return int(cache.get(caching._version_key(namespace)) or 0)


def wait_until_seen(namespace: str, version: int, within: float) -> float:
    """Seconds until other readers see ``version``; fails after ``within``."""
    started = time.monotonic()
    while seen_by_others(namespace) < version:
        assert time.monotonic() - started < within, f"{namespace} still at an older version"
        time.sleep(0.005)
    return time.monotonic() - started


@pytest.fixture
def window() -> Iterator[float]:
    """A window of 0.4 s, with nothing sent within it: the next bump goes at once."""
    caching.settle_bumps()
    with override_settings(STOREOPS_BUMP_WINDOW=0.4):
        time.sleep(0.4)
        yield 0.4


def test_an_isolated_write_is_bumped_at_once(window: float) -> None:
    caching.bump("stock")
    assert seen_by_others("stock") == 1


def test_a_burst_of_writes_is_one_bump_sent_by_the_window_end(window: float) -> None:
    caching.bump("stock", "outbox")  # the first: at once
    for _ in range(49):
        caching.bump("stock", "outbox")
    assert seen_by_others("stock") == 1  # the other 49 wait for the window...
    waited = wait_until_seen("stock", 2, within=window + 1.0)
    # ...and arrive together, once, for every namespace of the batch.
    assert waited <= window + 0.2
    time.sleep(0.05)
    assert (seen_by_others("stock"), seen_by_others("outbox")) == (2, 2)


def test_the_writing_process_reads_its_batched_writes_at_once(window: float) -> None:
    caching.bump("stock")
    caching.bump("stock", "lowstock")  # batched
    assert caching.namespace_versions("stock", "lowstock") == {"stock": 2, "lowstock": 1}
    assert seen_by_others("lowstock") == 1  # the read sent the batch


def _product(stock: int) -> Product:
    return factories.product(shop=factories.shop(), category=factories.category(), stock=stock)


def test_a_write_request_answers_only_after_its_batched_bump_is_sent(
    window: float, operator_client: Client
) -> None:
    url = reverse("store-product-adjust", args=[_product(stock=20).pk])
    form = operator_client.get(url, HTTP_HX_REQUEST="true").content.decode()
    key = re.search(r'name="idempotency_key" value="([^"]*)"', form)
    assert key
    caching.bump("catalog")  # a bump just sent: the request's own bump is batched
    response = operator_client.post(url, {"delta": "3", "idempotency_key": key.group(1)})
    assert response.status_code == 303  # Post/Redirect/Get
    # Without waiting for the window: the browser's next request, on any worker,
    # must see the new stock version.
    assert seen_by_others("stock") == 1


def test_a_burst_of_adjustments_outside_a_request_reaches_other_readers_within_the_window(
    window: float,
) -> None:
    from store.services.stock import stock_adjust

    products = [_product(stock=50) for _ in range(3)]
    time.sleep(window)  # creating them bumped the catalog: start outside that window
    started = time.monotonic()
    for product in products * 5:
        stock_adjust(product=product.pk, delta=-1, actor=None, reason="burst")
    elapsed = time.monotonic() - started
    wait_until_seen("stock", 1, within=window + 1.0)
    time.sleep(window + 0.1)  # every batch sent
    # Fifteen writes, one bump per window they spanned (plus the one sent at once).
    assert 1 <= seen_by_others("stock") <= 2 + elapsed / window
    assert seen_by_others("outbox") >= 1


@pytest.mark.redis  # another process sees this one's counters only through Redis
@pytest.mark.postgres
def test_a_process_that_exits_within_the_window_sends_its_batch_first(window: float) -> None:
    code = (
        "import django; django.setup()\n"
        "from store import caching\n"
        "caching.bump('stock'); caching.bump('stock', 'outbox')\n"  # the second batched
    )
    db = connection.settings_dict
    env = os.environ | {
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        "STOREOPS_BUMP_WINDOW": "30",
    }
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert time.monotonic() - started < 30  # it did not wait for the window to end
    assert (seen_by_others("stock"), seen_by_others("outbox")) == (2, 1)
