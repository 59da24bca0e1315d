"""The cache under real faults: a lock holder killed mid-recompute, Redis restarted.

Real processes only: the lock holder is a Python subprocess killed with SIGKILL, and
the restarted Redis is a ``redis-server`` this module starts on a free port (never
the shared one the rest of the suite uses).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import redis
from django.conf import settings
from django.core.cache import cache, caches
from django.test import override_settings

from store import cache_lock, caching
from store.tests.redis_server import RedisServer, own_redis  # noqa: F401 (a fixture)

pytestmark = pytest.mark.redis
ROOT = Path(__file__).resolve().parents[2]
REDIS_SERVER = shutil.which("redis-server") or "redis-server"


def test_the_cache_is_back_within_one_breaker_period_after_redis_restarts(
    own_redis: RedisServer,  # noqa: F811
) -> None:
    cooldown = 1.0
    config = {
        "default": {
            "BACKEND": "store.cache_backend.BreakerRedisCache",
            "LOCATION": own_redis.url,
            "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 0.5, "SOCKET_TIMEOUT": 0.5},
        }
    }
    threads = 4

    def request(n: int) -> bool:
        """What a request does to the cache: write, read back, bump, settle."""
        key = f"t:{threading.get_ident()}"
        cache.set(key, n)
        hit = cache.get(key) == n
        caching.bump_now("stock")
        caching.settle_bumps()
        return hit

    with (
        override_settings(CACHES=config, STOREOPS_CACHE_BREAKER_SECONDS=cooldown),
        # The same threads before and after the outage, as in a worker: each keeps
        # its cache object, its pooled connections and its bump connection.
        ThreadPoolExecutor(max_workers=threads) as workers,
    ):
        breaker = caches["default"].breaker
        breaker.reset()
        before = breaker.openings
        warm = threading.Barrier(threads)

        def warm_up(n: int) -> bool:
            warm.wait(10)  # all at once: several pooled connections, one bump each
            return request(n)

        assert all(workers.map(warm_up, range(threads)))

        own_redis.kill()
        assert not any(workers.map(request, range(threads)))
        opened_at = time.monotonic()
        assert breaker.openings == before + 1
        own_redis.start()  # same port, empty

        back_at = None
        deadline = opened_at + 4 * cooldown + 5
        while time.monotonic() < deadline:
            if all(workers.map(request, range(threads * 2))):
                back_at = time.monotonic()
                break
            time.sleep(0.01)
        assert back_at is not None, f"no cache hits {deadline - opened_at:.1f} s after the opening"
        # And it stays back: no stale connection trips the breaker again.
        steady_until = time.monotonic() + 2 * cooldown
        while time.monotonic() < steady_until:
            assert all(workers.map(request, range(threads * 2)))
        openings = breaker.openings - before
        breaker.reset()
    assert openings == 1
    assert back_at - opened_at <= cooldown + 0.5, f"back after {back_at - opened_at:.2f} s"


_HOLDER = """
import sys, time
import django
django.setup()
from store import caching

def compute():
    print("computing", flush=True)
    time.sleep(600)  # killed long before this ends

caching.get_or_compute(sys.argv[1], compute, 60, 300)
"""


def test_a_lock_whose_holder_is_killed_is_free_within_the_floor() -> None:
    key = f"t:killed:{os.getpid()}"
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, key],
        cwd=ROOT,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings"},
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "computing"
        lock_key = caches["default"].make_and_validate_key(f"lock:goc:{key}")
        raw = redis.Redis.from_url(settings.REDIS_URL)
        # A compute longer than the floor keeps its lock: the holder renews it.
        time.sleep(cache_lock.LOCK_FLOOR_SECONDS + 1.5)
        assert raw.exists(lock_key)
        assert 0 < raw.pttl(lock_key) <= cache_lock.LOCK_FLOOR_SECONDS * 1000
        assert cache_lock.lock_acquire(f"goc:{key}", timeout=5) is None
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(10)
        killed_at = time.monotonic()
        while (release := cache_lock.lock_acquire(f"goc:{key}", timeout=5)) is None:
            waited = time.monotonic() - killed_at
            assert waited < cache_lock.LOCK_FLOOR_SECONDS + 5, "lock not freed"
            time.sleep(0.05)
        freed_after = time.monotonic() - killed_at
        release()
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait(10)
    assert freed_after <= cache_lock.LOCK_FLOOR_SECONDS + 0.5
    # The next request computes at once (nobody holds the lock any more).
    assert caching.get_or_compute(key, lambda: "fresh", 60, 300).value == "fresh"
