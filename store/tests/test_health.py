"""Health probes: every alias, hard timeouts, lock waits, lag pitfalls, /readyz."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from django.conf import settings
from django.db import connections
from django.test import Client

from store import health
from store.deadlines import probe_connect
from store.health import health_snapshot, probe_all
from store.probes import STATEMENTS_HINT, Probe, replica_lag
from store.replicas import replica_state_from
from store.tests import factories

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")


@pytest.fixture(autouse=True)
def _no_cached_snapshot() -> Iterator[None]:
    from django.core.cache import cache

    cache.delete(health.CACHE_KEY)
    yield
    cache.delete(health.CACHE_KEY)


@contextmanager
def extra_alias(alias: str, *, like: str, **changes: object) -> Iterator[None]:
    """Configure one more database (like ``like``, with ``changes``) for the probes."""
    connections.settings[alias] = {**connections[like].settings_dict, **changes}
    try:
        yield
    finally:
        del connections.settings[alias]


def _dead(alias: str) -> dict:
    if connections[alias].vendor == "postgresql":
        return {"PORT": 1}
    return {"NAME": "/nonexistent/storeops/db.sqlite3"}


def test_every_alias_is_probed_with_what_applies() -> None:
    snapshot = probe_all()
    assert {p.alias for p in snapshot.probes} == set(connections.settings)
    for probe in snapshot.probes:
        assert probe.reachable, probe.error
        assert probe.latency_ms is not None
        assert probe.size_bytes is not None
        assert probe.status in {"ok", "warn"}
    primary = snapshot.probe("default")
    assert primary.role == "primary"
    assert snapshot.status in {"ok", "degraded"}
    for alias in ("shard_0", "shard_1"):
        shard = snapshot.probe(alias)
        assert shard.bucket_ranges
        assert set(shard.rows) == {"customerprofile", "customerevent"}


def test_a_dead_server_is_reported_down_without_stalling_the_others() -> None:
    with extra_alias("shard_9", like="shard_0", **_dead("shard_0")):
        started = time.monotonic()
        snapshot = probe_all()
        elapsed = time.monotonic() - started
    dead = snapshot.probe("shard_9")
    assert dead.status == "down"
    assert not dead.reachable
    assert dead.reasons[0].startswith("unreachable")
    assert snapshot.probe("default").reachable
    assert elapsed < 2.0


def test_readyz_is_json_and_503_only_when_the_primary_is_down(client: Client) -> None:
    response = client.get("/readyz")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] in {"ok", "degraded"}
    assert set(body["databases"]) == set(connections.settings)
    assert body["databases"]["default"]["reachable"] is True
    assert "reasons" not in body["databases"]["default"], "no internals without a login"
    assert response["Cache-Control"].startswith("max-age=0")

    conf = connections["default"].settings_dict
    saved = dict(conf)
    conf.update(_dead("default"))  # new connections fail; this thread's stays open
    try:
        time.sleep(settings.STOREOPS_HEALTH_CACHE_SECONDS)  # the cached verdict expires
        response = client.get("/readyz")
    finally:
        conf.update(saved)
    assert response.status_code == 503
    assert response.json()["status"] == "down"
    assert response.json()["databases"]["default"]["reachable"] is False


def test_many_dashboards_share_one_probe_round() -> None:
    first = health_snapshot()
    assert health_snapshot() is not None
    assert health_snapshot().taken_at == first.taken_at
    assert health_snapshot(fresh=True).taken_at > first.taken_at


def _replica_probe(**values: object) -> Probe:
    probe = Probe(alias="replica_0", kind="replica", vendor="postgresql", reachable=True)
    probe.role = "replica"
    for name, value in values.items():
        setattr(probe, name, value)
    return probe


def test_an_idle_primary_does_not_read_as_growing_lag() -> None:
    # The last replayed commit is an hour old, but nothing newer exists: no lag.
    probe = _replica_probe(wal_lsn="0/3000060", receiver_status="streaming", replay_age_s=3600)
    replica_lag(probe, "0/3000060")
    assert probe.lag_bytes == 0
    assert probe.lag_seconds == 0.0
    health._grade(probe)
    assert probe.status == "ok"


def test_a_replica_behind_the_primary_shows_bytes_and_seconds() -> None:
    probe = _replica_probe(wal_lsn="0/3000000", receiver_status="streaming", replay_age_s=12.5)
    replica_lag(probe, "0/3000800")
    assert probe.lag_bytes == 0x800
    assert probe.lag_seconds == 12.5
    health._grade(probe)
    assert probe.status == "critical"


def test_a_disconnected_receiver_is_not_zero_lag() -> None:
    probe = _replica_probe(wal_lsn="0/3000060", receiver_status=None, replay_age_s=0.1)
    replica_lag(probe, "0/3000060")
    assert probe.lag_seconds is None
    assert probe.lag_bytes is None
    health._grade(probe)
    assert probe.status == "critical"
    assert "WAL receiver not running" in probe.reasons
    assert not replica_state_from(probe).usable


@contextmanager
def _in_thread(alias: str, statements: list[str], ready: threading.Event) -> Iterator[dict]:
    """Run statements on this alias in another connection and keep it open until exit."""
    release = threading.Event()
    info: dict = {"release": release}

    def run() -> None:
        connection = connections[alias]
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_backend_pid()")
                info["pid"] = cursor.fetchone()[0]
                for sql in statements[:-1]:
                    cursor.execute(sql)
                ready.set()
                if statements:
                    try:
                        cursor.execute(statements[-1])
                    except Exception as exc:  # the blocked statement is cancelled below
                        info["error"] = exc
                release.wait(15)
                cursor.execute("ROLLBACK")
        except Exception as exc:  # reported by the test instead of a silent thread death
            info["failed"] = exc
            ready.set()
        finally:
            connection.close()

    thread = threading.Thread(target=run)
    thread.start()
    try:
        yield info
    finally:
        release.set()
        thread.join(15)


@pytest.mark.postgres
def test_a_ddl_lock_costs_one_field_not_the_panel() -> None:
    ready = threading.Event()
    lock = ["BEGIN", "LOCK TABLE store_customerprofile IN ACCESS EXCLUSIVE MODE", "SELECT 1"]
    with _in_thread("shard_0", lock, ready) as holder:
        assert ready.wait(15)
        assert "failed" not in holder
        started = time.monotonic()
        snapshot = probe_all()
        elapsed = time.monotonic() - started
    shard = snapshot.probe("shard_0")
    assert shard.reachable
    assert shard.rows["customerprofile"] is None
    assert any("lock" in reason for reason in shard.reasons)
    assert elapsed < 2.5


def _activity() -> list:
    """What every session of the test database is doing (for a failure message)."""
    with probe_connect("default") as conn:
        return conn.execute(
            "SELECT pid, state, wait_event_type, wait_event, pg_blocking_pids(pid), left(query, 80)"
            " FROM pg_stat_activity WHERE datname = current_database()"
        ).fetchall()


@pytest.mark.postgres
def test_blocked_queries_name_who_blocks_them() -> None:
    product = factories.product(shop=factories.shop(), category=factories.category())
    holder_ready, waiter_ready = threading.Event(), threading.Event()
    lock_row = f"SELECT id FROM store_product WHERE id = {product.pk} FOR UPDATE"
    update = f"UPDATE store_product SET stock = stock + 1 WHERE id = {product.pk}"
    # The holder must own the row before the waiter asks for it, hence the nesting.
    with _in_thread("default", ["BEGIN", lock_row, lock_row], holder_ready) as holder:
        assert holder_ready.wait(15), _activity()
        assert "failed" not in holder
        waiting = ["BEGIN", "SET lock_timeout = '10s'", update]
        with _in_thread("default", waiting, waiter_ready) as waiter:
            assert waiter_ready.wait(15), _activity()
            assert "failed" not in waiter
            _assert_blocked(waiter_pid=waiter["pid"], holder_pid=holder["pid"])
            holder["release"].set()  # let the waiter through before both threads end


def _assert_blocked(*, waiter_pid: int, holder_pid: int) -> None:
    deadline = time.monotonic() + 5
    while True:
        primary = probe_all(["default"]).probe("default")
        if primary.blocked or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert [b.pid for b in primary.blocked] == [waiter_pid]
    assert primary.blocked[0].blocked_by == [holder_pid]
    assert "FOR UPDATE" in primary.blocked[0].blocker_query
    assert primary.idle_in_transaction >= 1
    assert primary.status in {"warn", "critical"}
    assert "1 blocked queries" in primary.reasons


@pytest.mark.postgres
def test_without_pg_stat_statements_the_panel_says_how_to_enable_it() -> None:
    primary = probe_all(["default"]).probe("default")
    installed = primary.slow_statements is not None
    assert installed or primary.statements_hint == STATEMENTS_HINT
