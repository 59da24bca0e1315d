"""get_or_compute (lock, stale serve, background refresh, XFetch), versions, the breaker.

Background refreshes run for real (threads, the real cache and database); a test
waits for them with ``background.drain()``.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.core.cache import cache, caches
from django.db import connections
from django.test import override_settings

from store import cache_lock, caching
from store import refresh as background
from store.selectors.trending import trending
from store.tests import factories
from store.tests.caches import DEAD_REDIS


def test_cold_then_hit_then_recompute_after_a_bump() -> None:
    calls: list[int] = []

    def compute() -> int:
        calls.append(1)
        return len(calls)

    first = caching.get_or_compute("t:basic", compute, 60, 60, namespaces=("catalog",))
    second = caching.get_or_compute("t:basic", compute, 60, 60, namespaces=("catalog",))
    assert (first.value, first.hit, second.value, second.hit) == (1, False, 1, True)
    assert second.computed_at == first.computed_at
    caching.bump_now("catalog")
    # The earlier value at once, marked stale; the recompute runs in the background.
    third = caching.get_or_compute("t:basic", compute, 60, 60, namespaces=("catalog",))
    assert (third.value, third.hit, third.stale) == (1, True, True)
    assert background.drain(5)
    fourth = caching.get_or_compute("t:basic", compute, 60, 60, namespaces=("catalog",))
    assert (fourth.value, fourth.hit, fourth.stale) == (2, True, False)
    assert len(calls) == 2


def test_a_bump_on_another_namespace_keeps_the_value() -> None:
    caching.get_or_compute("t:other", lambda: "a", 60, 60, namespaces=("stock",))
    caching.bump_now("orders")
    assert caching.get_or_compute("t:other", lambda: "b", 60, 60, namespaces=("stock",)).hit


def test_bump_inside_a_transaction_waits_for_commit(db: None) -> None:
    from django.db import transaction

    before = caching.namespace_versions("stock")["stock"]
    with transaction.atomic():
        caching.bump("stock")
        assert caching.namespace_versions("stock")["stock"] == before


@pytest.mark.django_db(transaction=True)
def test_bump_after_commit_changes_the_version() -> None:
    from django.db import transaction

    before = caching.namespace_versions("stock")["stock"]
    with transaction.atomic():
        caching.bump("stock")
    assert caching.namespace_versions("stock")["stock"] == before + 1


def test_expired_value_is_served_stale_and_refreshed() -> None:
    caching.get_or_compute("t:ttl", lambda: "old", 0.05, 60, beta=0)
    time.sleep(0.1)
    served = caching.get_or_compute("t:ttl", lambda: "new", 0.05, 60, beta=0)
    assert (served.value, served.stale) == ("old", True)
    assert background.drain(5)
    assert caching.get_or_compute("t:ttl", lambda: "newer", 60, 60, beta=0).value == "new"


def test_xfetch_refreshes_a_hot_key_before_it_expires() -> None:
    def slow() -> float:
        time.sleep(0.02)
        return time.monotonic()

    first = caching.get_or_compute("t:xfetch", slow, 3600, 60)
    # beta=0: never early; a huge beta: the compute time dwarfs the hour left.
    assert caching.get_or_compute("t:xfetch", slow, 3600, 60, beta=0).hit
    early = caching.get_or_compute("t:xfetch", slow, 3600, 60, beta=1e9)
    # Still fresh: served as it is, not stale, while the early refresh runs.
    assert (early.value, early.hit, early.stale) == (first.value, True, False)
    assert background.drain(5)
    refreshed = caching.get_or_compute("t:xfetch", slow, 3600, 60, beta=0)
    assert refreshed.value > first.value


def _seed_then_bump(key: str, value: object) -> None:
    caching.get_or_compute(key, lambda: value, 60, 600, namespaces=("orders",))
    caching.bump_now("orders")


def test_a_stale_value_is_served_at_once_while_the_refresh_runs_in_the_background() -> None:
    _seed_then_bump("t:stale", "v1")
    started, release = threading.Event(), threading.Event()
    seen: dict[str, object] = {}

    def slow_recompute() -> str:
        seen["thread"] = threading.current_thread().name
        started.set()
        assert release.wait(10)
        return "v2"

    began = time.monotonic()
    served = caching.get_or_compute("t:stale", slow_recompute, 60, 600, namespaces=("orders",))
    took = time.monotonic() - began
    assert (served.value, served.hit, served.stale) == ("v1", True, True)
    assert took < 0.5  # the recompute blocks for up to 10 s
    assert started.wait(5)  # ...in another thread, now
    assert seen["thread"] != threading.current_thread().name
    # Asked again meanwhile: still the stale value, and no second refresh.
    again = caching.get_or_compute("t:stale", lambda: "never", 60, 600, namespaces=("orders",))
    assert (again.value, again.stale) == ("v1", True)
    release.set()
    assert background.drain(5)
    fresh = caching.get_or_compute("t:stale", lambda: "never", 60, 600, namespaces=("orders",))
    assert (fresh.value, fresh.hit, fresh.stale) == ("v2", True, False)


def test_many_readers_of_a_stale_key_start_one_refresh() -> None:
    _seed_then_bump("t:many", "v1")
    release = threading.Event()
    calls: list[int] = []
    barrier = threading.Barrier(16)

    def recompute() -> str:
        calls.append(1)
        assert release.wait(10)
        return "v2"

    def reader(_: int) -> tuple[object, bool, float]:
        barrier.wait(10)
        began = time.monotonic()
        found = caching.get_or_compute("t:many", recompute, 60, 600, namespaces=("orders",))
        return found.value, found.stale, time.monotonic() - began

    with ThreadPoolExecutor(max_workers=16) as readers:
        results = list(readers.map(reader, range(16)))
    assert {(value, stale) for value, stale, _ in results} == {("v1", True)}
    assert max(took for _, _, took in results) < 1.0
    release.set()
    assert background.drain(5)
    assert len(calls) == 1
    assert (
        caching.get_or_compute("t:many", recompute, 60, 600, namespaces=("orders",)).value == "v2"
    )
    assert len(calls) == 1


def test_no_refresh_while_another_process_holds_the_key_lock() -> None:
    _seed_then_bump("t:held", "v1")
    # What another worker process holds while it recomputes the key.
    release = cache_lock.lock_acquire("goc:t:held", timeout=5)
    assert release is not None
    try:
        served = caching.get_or_compute("t:held", lambda: "v2", 60, 600, namespaces=("orders",))
        assert background.drain(5)
        after = caching.get_or_compute("t:held", lambda: "v2", 60, 600, namespaces=("orders",))
    finally:
        release()
    assert (served.value, after.value, after.stale) == ("v1", "v1", True)


def test_a_busy_refresh_pool_skips_refreshes_instead_of_queueing_them() -> None:
    keys = [f"t:busy:{n}" for n in range(5)]
    for key in keys:
        _seed_then_bump(key, "old")
    release = threading.Event()
    running: list[str] = []

    def blocked(key: str):
        def compute() -> str:
            running.append(key)
            assert release.wait(10)
            return "new"

        return compute

    # Interval 0: each refresh is due at once (the values were just computed).
    with override_settings(STOREOPS_REFRESH_THREADS=2, STOREOPS_REFRESH_MIN_INTERVAL=0):
        try:
            for key in keys:
                found = caching.get_or_compute(key, blocked(key), 60, 600, namespaces=("orders",))
                assert (found.value, found.stale) == ("old", True)
            time.sleep(0.2)
            assert sorted(running) == keys[:2]  # two threads: two refreshes, three skipped
            assert caching.counters(keys[2])["refresh-skipped"] == 1
        finally:
            release.set()
            assert background.drain(5)
        values = []
        for key in keys:  # one at a time: two threads cannot take three at once
            values.append(
                caching.get_or_compute(key, blocked(key), 60, 600, namespaces=("orders",)).value
            )
            assert background.drain(5)
        assert values == ["new", "new", "old", "old", "old"]  # the next request retries
    assert sorted(running) == keys


@override_settings(STOREOPS_REFRESH_MIN_INTERVAL=0.5)
def test_a_stream_of_writes_recomputes_a_value_once_per_interval() -> None:
    calls: list[float] = []

    def compute() -> int:
        calls.append(time.time())
        return len(calls)

    first = caching.get_or_compute("t:stream", compute, 60, 600, namespaces=("stock",))
    served = []
    for _ in range(10):  # a write every 20 ms, each followed by a reader
        caching.bump_now("stock")
        served.append(caching.get_or_compute("t:stream", compute, 60, 600, namespaces=("stock",)))
        time.sleep(0.02)
    # All ten served the first value at once, none started a recompute yet...
    assert [(c.value, c.stale, c.refreshing) for c in served] == [(1, True, False)] * 10
    assert len(calls) == 1
    # ...one is due when the value is 0.5 s old, and it includes every write.
    assert background.drain(5)
    assert len(calls) == 2
    assert calls[1] - first.computed_at.timestamp() >= 0.5
    after = caching.get_or_compute("t:stream", compute, 60, 600, namespaces=("stock",))
    assert (after.value, after.stale) == (2, False)


@override_settings(STOREOPS_REFRESH_MIN_INTERVAL=0.2)
def test_a_value_older_than_the_interval_is_refreshed_at_once_and_says_so() -> None:
    caching.get_or_compute("t:old", lambda: "old", 60, 600, namespaces=("stock",))
    time.sleep(0.25)
    caching.bump_now("stock")
    served = caching.get_or_compute("t:old", lambda: "new", 60, 600, namespaces=("stock",))
    # "refreshing": asking again in a moment gets the new value (the page re-polls).
    assert (served.value, served.stale, served.refreshing) == ("old", True, True)
    assert background.drain(5)
    assert caching.get_or_compute("t:old", lambda: "x", 60, 600, namespaces=("stock",)).value == (
        "new"
    )


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
@override_settings(STOREOPS_REFRESH_THREADS=1, STOREOPS_REFRESH_MIN_INTERVAL=0)
def test_refresh_threads_keep_their_connection_until_shut_down() -> None:
    from django.db import connection

    def backend() -> int:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            return cursor.fetchone()[0]

    pids = []
    for n in range(3):
        _seed_then_bump(f"t:conn:{n}", 0)
        caching.get_or_compute(f"t:conn:{n}", backend, 60, 600, namespaces=("orders",))
        assert background.drain(5)
        fresh = caching.get_or_compute(f"t:conn:{n}", backend, 60, 600, namespaces=("orders",))
        assert not fresh.stale
        pids.append(fresh.value)
    assert len(set(pids)) == 1, pids  # one connection, not one per refresh
    background.shutdown()

    def alive(pid: int) -> bool:
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", [pid])
            return cursor.fetchone()[0] == 1

    deadline = time.monotonic() + 5
    while alive(pids[0]) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(pids[0])  # closed with its thread


def test_a_refresh_runs_outside_the_requests_context() -> None:
    from store import querylog, routing

    caching.get_or_compute("t:context", lambda: "old", 0.01, 60, beta=0)
    time.sleep(0.05)
    seen: dict[str, object] = {}

    def compute() -> str:
        seen["panel"] = querylog.current_panel()
        seen["pinned"] = routing.pinned_to_primary.get()
        return "new"

    token = routing.pinned_to_primary.set(True)
    try:
        with querylog.capture("some-panel"):
            served = caching.get_or_compute("t:context", compute, 60, 60, beta=0)
    finally:
        routing.pinned_to_primary.reset(token)
    assert background.drain(5)
    assert served.value == "old"  # expired by time, not by a write: served stale
    assert seen == {"panel": None, "pinned": False}


def test_a_caller_that_must_read_its_own_writes_is_not_served_pre_write_data() -> None:
    from store import routing

    _seed_then_bump("t:own", "before the write")
    with routing.use_primary():
        found = caching.get_or_compute(
            "t:own", lambda: "after the write", 60, 600, namespaces=("orders",)
        )
    assert (found.value, found.hit, found.stale) == ("after the write", False, False)


@pytest.mark.django_db(transaction=True)
def test_a_failing_refresh_keeps_the_stale_value_and_logs_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from django.db import DatabaseError, connection

    _seed_then_bump("t:fails", "v1")
    used: list[object] = []

    def broken_query() -> str:
        used.append(connections["default"])
        with connection.cursor() as cursor:
            cursor.execute("SELECT * FROM no_such_table")  # a real database error
        return "never"

    with caplog.at_level(logging.WARNING, logger="store.caching"):
        for _ in range(3):
            found = caching.get_or_compute("t:fails", broken_query, 60, 600, namespaces=("orders",))
            assert (found.value, found.stale) == ("v1", True)
            assert background.drain(5)
    assert len(used) == 3  # each request retried once the previous refresh had failed
    errors = [r for r in caplog.records if "background refresh" in r.getMessage()]
    assert len(errors) == 1  # once per key and failure, not once per request
    assert "goc:t:fails" in errors[0].getMessage()
    assert errors[0].exc_info is not None
    assert issubclass(errors[0].exc_info[0], DatabaseError)
    # On the refresh threads' own connections, never the request's.
    assert all(wrapper is not connections["default"] for wrapper in used)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="store.caching"):
        caching.get_or_compute("t:fails", lambda: "v2", 60, 600, namespaces=("orders",))
        assert background.drain(5)
    assert (
        caching.get_or_compute("t:fails", broken_query, 60, 600, namespaces=("orders",)).value
        == "v2"
    )
    assert any("works again" in r.getMessage() for r in caplog.records)


def test_inside_a_transaction_the_refresh_runs_in_the_callers_thread(db: None) -> None:
    # Another thread's connection would not see this transaction's writes.
    _seed_then_bump("t:atomic", "v1")
    threads: list[str] = []

    def compute() -> str:
        threads.append(threading.current_thread().name)
        return "v2"

    found = caching.get_or_compute("t:atomic", compute, 60, 600, namespaces=("orders",))
    assert (found.value, found.hit) == ("v2", False)
    assert threads == [threading.current_thread().name]


def test_lock_lifetime_follows_the_compute_time_within_floor_and_cap() -> None:
    assert cache_lock.lock_timeout(None) == cache_lock.LOCK_FLOOR_SECONDS
    assert cache_lock.lock_timeout(0.05) == cache_lock.LOCK_FLOOR_SECONDS
    assert cache_lock.lock_timeout(4.0) == 4.0 * cache_lock.LOCK_FACTOR
    assert cache_lock.lock_timeout(3600.0) == cache_lock.LOCK_CAP_SECONDS


def test_a_long_compute_keeps_its_lock_past_its_lifetime(monkeypatch: pytest.MonkeyPatch) -> None:
    # A short floor so that the test outlives it quickly; renewal does the rest.
    monkeypatch.setattr(cache_lock, "LOCK_FLOOR_SECONDS", 0.3)
    started, release = threading.Event(), threading.Event()

    def long_compute() -> str:
        started.set()
        assert release.wait(10)
        return "done"

    with ThreadPoolExecutor(max_workers=1) as worker:
        future = worker.submit(caching.get_or_compute, "t:long", long_compute, 60, 60)
        assert started.wait(5)
        time.sleep(1.0)  # more than three lifetimes
        assert cache_lock.lock_acquire("goc:t:long", timeout=5) is None
        release.set()
        assert future.result(5).value == "done"
    again = cache_lock.lock_acquire("goc:t:long", timeout=5)
    assert again is not None  # released with the work
    again()


@pytest.mark.django_db(transaction=True)
def test_stampede_on_a_cold_trending_computes_once() -> None:
    shop, category = factories.shop(), factories.category()
    product = factories.product(shop=shop, category=category, price=500)
    factories.order(shop=shop, lines=[(product, 3)], paid=True)
    calls: list[int] = []
    lock = threading.Lock()
    barrier = threading.Barrier(20)
    results: list[caching.Computed] = []
    errors: list[BaseException] = []

    def compute():
        with lock:
            calls.append(1)
        time.sleep(0.2)  # a heavy aggregate: everyone else arrives meanwhile
        return trending(window="7d")

    def worker() -> None:
        try:
            barrier.wait(10)
            found = caching.get_or_compute(
                "t:trending", compute, 60, 300, namespaces=("orders",), wait=10
            )
            with lock:
                results.append(found)
        except BaseException as exc:  # surfaced below, never swallowed
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=worker) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []
    assert len(calls) == 1
    assert len(results) == 20
    assert len({r.computed_at for r in results}) == 1
    assert sum(not r.hit for r in results) == 1
    assert results[0].value.products[0].revenue == 1500


def test_breaker_turns_a_dead_redis_into_fast_misses(caplog: pytest.LogCaptureFixture) -> None:
    with override_settings(CACHES=DEAD_REDIS, STOREOPS_CACHE_BREAKER_SECONDS=30):
        backend = caches["default"]
        backend.breaker.reset()
        before = backend.breaker.openings
        with caplog.at_level(logging.WARNING, logger="store.caching"):
            assert cache.get("anything", "default") == "default"
            started = time.monotonic()
            for _ in range(50):
                assert cache.get("anything") is None
                cache.set("anything", 1)
            assert time.monotonic() - started < 0.5  # no connect attempt while open
            caching.bump_now("stock")  # a write's bump must not fail the request
            assert caching.namespace_versions("stock") == {"stock": 0}
            computed = caching.get_or_compute("t:down", lambda: 42, 60, 60, namespaces=("stock",))
        assert (computed.value, computed.hit) == (42, False)
        assert backend.breaker.openings == before + 1
        warnings = [r for r in caplog.records if "circuit open" in r.getMessage()]
        assert len(warnings) == 1
        backend.breaker.reset()


def test_breaker_retries_after_the_cooldown(caplog: pytest.LogCaptureFixture) -> None:
    with override_settings(CACHES=DEAD_REDIS, STOREOPS_CACHE_BREAKER_SECONDS=0.1):
        backend = caches["default"]
        backend.breaker.reset()
        before = backend.breaker.openings
        with caplog.at_level(logging.WARNING, logger="store.caching"):
            cache.get("k")
            cache.get("k")
            time.sleep(0.15)
            cache.get("k")  # half-open: one more try, fails, opens again
        assert backend.breaker.openings == before + 2
        assert len([r for r in caplog.records if "circuit open" in r.getMessage()]) == 2
        backend.breaker.reset()


@pytest.mark.redis
def test_redis_lock_is_used_on_redis() -> None:
    from django_redis.cache import RedisCache

    assert isinstance(caches["default"], RedisCache)
    release = cache_lock.lock_acquire("t:lock", timeout=5)
    assert release is not None
    assert cache_lock.lock_acquire("t:lock", timeout=5) is None
    release()
    again = cache_lock.lock_acquire("t:lock", timeout=5)
    assert again is not None
    again()


def test_versions_start_at_0_and_every_bump_counts_even_concurrent_first_bumps() -> None:
    assert caching.namespace_versions("catalog", "stock") == {"catalog": 0, "stock": 0}
    caching.bump_now("catalog")
    caching.bump_now("catalog")
    assert caching.namespace_versions("catalog") == {"catalog": 2}
    # Eight writers bump a never-bumped namespace at once: no bump may be lost.
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda _: caching.bump_now("stock"), range(8)))
    assert caching.namespace_versions("stock") == {"stock": 8}
    # Several namespaces in one bump (one round trip on Redis), twice: the second
    # reuses the packed commands.
    caching.bump_now("stock", "outbox")
    caching.bump_now("stock", "outbox")
    assert caching.namespace_versions("stock", "outbox") == {"stock": 10, "outbox": 2}


@pytest.mark.redis
def test_a_bump_reaches_redis_before_its_reply_is_read() -> None:
    import redis
    from django.conf import settings

    caching.bump_now("stock", "outbox")
    # Redis applied the INCRs when they arrived: another connection sees them even
    # though this thread has not read the replies yet...
    other = redis.Redis.from_url(settings.REDIS_URL)
    keys = [
        caches["default"].make_and_validate_key(caching._version_key(ns))
        for ns in ("stock", "outbox")
    ]
    assert other.mget(keys) == [b"1", b"1"]
    # ...and this thread reads the replies before it reads any version itself.
    caching.bump_now("stock")
    assert caching.namespace_versions("stock", "outbox") == {"stock": 2, "outbox": 1}


@pytest.mark.redis
def test_a_bump_that_redis_refuses_opens_the_breaker_when_its_reply_is_read(
    caplog: pytest.LogCaptureFixture,
) -> None:
    backend = caches["default"]
    backend.breaker.reset()
    before = backend.breaker.openings
    cache.set(caching._version_key("stock"), "not a counter", timeout=None)
    with caplog.at_level(logging.WARNING, logger="store.caching"):
        caching.bump_now("stock")  # sent; the error is in the reply, read later
        caching.settle_bumps()  # the write's caller never sees the error
    assert backend.breaker.openings == before + 1
    assert any("circuit open" in r.getMessage() for r in caplog.records)
    backend.breaker.reset()
    cache.delete(caching._version_key("stock"))
    caching.bump_now("stock")  # a new connection: nothing left owing from the old one
    assert caching.namespace_versions("stock") == {"stock": 1}
