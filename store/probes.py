"""Probing one database: its own short-lived connection, one round trip, hard limits.

Every probe opens (or reuses for a few seconds) a connection of its own with hard
limits (connect timeout, ``statement_timeout``, ``lock_timeout``), cut by the
deadline watchdog if the peer goes silent, so a dead server or a table held by a DDL
lock costs at most a couple of seconds. ``store.health`` grades a round of these
probes for the shard-health panel and /readyz; ``store.replicas`` keeps what the
router needs from the light probe.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from django.conf import settings
from django.db import DatabaseError

from store import deadlines

# One round of probes gets what one probe connection gets before the watchdog cuts it.
OVERALL_DEADLINE_S = deadlines.PROBE_DEADLINE_S

STATEMENTS_HINT = (
    "pg_stat_statements is not available: add it to shared_preload_libraries in "
    "postgresql.conf, restart PostgreSQL, then run CREATE EXTENSION pg_stat_statements;"
)


@dataclass
class Blocked:
    pid: int
    blocked_by: list[int]
    wait_s: float
    query: str
    blocker_query: str


@dataclass
class Probe:
    alias: str
    kind: str  # primary | replica | shard
    vendor: str
    reachable: bool = False
    error: str = ""
    latency_ms: float | None = None
    role: str | None = None  # primary | replica, as the server itself reports
    size_bytes: int | None = None
    connections: int | None = None
    max_connections: int | None = None
    cache_hit_pct: float | None = None
    longest_query_s: float | None = None
    longest_transaction_s: float | None = None
    idle_in_transaction: int | None = None
    blocked: list[Blocked] = field(default_factory=list)
    slow_statements: list[dict[str, Any]] | None = None
    statements_hint: str = ""
    # Replication (replica side, then combined with the primary's position).
    wal_lsn: str | None = None  # primary: current; replica: replayed
    receiver_status: str | None = None
    lag_bytes: int | None = None
    lag_seconds: float | None = None
    replay_age_s: float | None = None
    standbys: list[dict[str, Any]] = field(default_factory=list)  # primary side
    # Shards.
    bucket_ranges: list[tuple[int, int]] = field(default_factory=list)
    rows: dict[str, int | None] = field(default_factory=dict)
    status: str = "ok"
    reasons: list[str] = field(default_factory=list)


def lsn_int(lsn: str) -> int:
    """``'16/B374D848'`` as a number that orders like the WAL position."""
    high, low = lsn.split("/")
    return (int(high, 16) << 32) + int(low, 16)


def _kind(alias: str) -> str:
    if alias.startswith("replica_"):
        return "replica"
    if alias.startswith("shard_"):
        return "shard"
    return "primary"


class _Statements:
    """Runs probe statements one by one: one that times out loses only its own field."""

    def __init__(self, conn: psycopg.Connection, probe: Probe) -> None:
        self.conn = conn
        self.probe = probe

    def one(self, sql: str, params: list[Any] | None = None) -> tuple[Any, ...] | None:
        try:
            return self.conn.execute(sql, params).fetchone()  # type: ignore[arg-type]
        except psycopg.errors.QueryCanceled as exc:
            self.probe.reasons.append(f"probe query timed out: {deadlines.first_line(exc)}")
        except psycopg.errors.LockNotAvailable:
            self.probe.reasons.append("probe query waited for a lock (DDL in progress?)")
        except psycopg.Error as exc:
            self.probe.reasons.append(f"probe query failed: {deadlines.first_line(exc)}")
        return None

    def all(self, sql: str, params: list[Any] | None = None) -> list[tuple[Any, ...]] | None:
        try:
            return self.conn.execute(sql, params).fetchall()  # type: ignore[arg-type]
        except psycopg.Error as exc:
            self.probe.reasons.append(f"probe query failed: {deadlines.first_line(exc)}")
            return None


# Everything a probe reads, in one round trip (each costs a millisecond or more on a
# loaded server; the panel's cold compute is mostly round trips). Replica fields are
# NULL on a primary and the other way round; the row estimates come from the planner.
_PROBE_SQL = """
SELECT pg_is_in_recovery(), pg_database_size(current_database()),
 (SELECT count(*) FROM pg_stat_activity),
 current_setting('max_connections')::int,
 (SELECT round(100.0 * blks_hit / nullif(blks_hit + blks_read, 0), 2)
    FROM pg_stat_database WHERE datname = current_database()),
 a.longest_query, a.longest_transaction, a.idle_in_transaction,
 EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_stat_statements'),
 CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn()::text
      ELSE pg_current_wal_lsn()::text END,
 CASE WHEN pg_is_in_recovery()
      THEN extract(epoch FROM now() - pg_last_xact_replay_timestamp()) END,
 (SELECT status FROM pg_stat_wal_receiver),
 (SELECT reltuples::bigint FROM pg_class WHERE oid = to_regclass('store_customerprofile')),
 (SELECT reltuples::bigint FROM pg_class WHERE oid = to_regclass('store_customerevent')),
 (SELECT json_agg(b ORDER BY b.started) FROM (
    SELECT w.pid, pg_blocking_pids(w.pid) AS blocked_by, w.query_start AS started,
     extract(epoch FROM now() - w.query_start) AS wait_s, left(w.query, 200) AS query,
     (SELECT left(x.query, 200) FROM pg_stat_activity x
       WHERE x.pid = (pg_blocking_pids(w.pid))[1]) AS blocker_query
    FROM pg_stat_activity w
    WHERE w.datname = current_database() AND cardinality(pg_blocking_pids(w.pid)) > 0
    ORDER BY w.query_start LIMIT 10) b),
 (SELECT json_agg(r ORDER BY r.address, r.name) FROM (
    SELECT application_name AS name, client_addr::text AS address, state,
     pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn)::bigint AS replay_lag_bytes,
     extract(epoch FROM write_lag)::float AS write_lag_s,
     extract(epoch FROM flush_lag)::float AS flush_lag_s,
     extract(epoch FROM replay_lag)::float AS replay_lag_s
    FROM pg_stat_replication WHERE NOT pg_is_in_recovery()) r)
FROM (SELECT
  extract(epoch FROM max(now() - query_start) FILTER (WHERE state = 'active'))
    AS longest_query,
  extract(epoch FROM max(now() - xact_start)) AS longest_transaction,
  count(*) FILTER (WHERE state LIKE 'idle in transaction%%') AS idle_in_transaction
  FROM pg_stat_activity
  WHERE datname = current_database() AND pid <> pg_backend_pid()
  AND backend_type = 'client backend') a
"""

# A probe connection is the probes' own (never a request's) and lives a few seconds:
# reused by the next probe round, so a cold panel does not pay a connection per
# database each time, and discarded on any error or overrun (store/deadlines.py cuts
# it at the probe deadline if the peer goes silent).
PROBE_CONNECTION_SECONDS = 10.0
_probe_connections: dict[tuple[str, ...], tuple[psycopg.Connection, float]] = {}
_probe_connections_lock = threading.Lock()


@contextlib.contextmanager
def _probe_connection(alias: str) -> Iterator[psycopg.Connection]:
    conf = settings.DATABASES[alias]
    # Keyed by where it points too: a changed HOST or PORT gets a new connection.
    key = (alias, str(conf["NAME"]), str(conf.get("HOST")), str(conf.get("PORT")))
    with _probe_connections_lock:
        kept = _probe_connections.pop(key, None)
    if kept is not None and time.monotonic() - kept[1] < PROBE_CONNECTION_SECONDS:
        conn, born = kept
    else:
        if kept is not None:
            kept[0].close()
        conn, born = deadlines.probe_connect(alias), time.monotonic()
    try:
        with deadlines.probe_watched(alias, conn):
            yield conn
    except BaseException:
        conn.close()
        raise
    if conn.closed or conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        conn.close()
        return
    with _probe_connections_lock:
        previous = _probe_connections.pop(key, None)
        _probe_connections[key] = (conn, born)
    if previous is not None:
        previous[0].close()


def probe_connections_close() -> None:
    with _probe_connections_lock:
        kept = list(_probe_connections.values())
        _probe_connections.clear()
    for conn, _ in kept:
        conn.close()


def _probe_postgres(probe: Probe, *, heartbeat: bool) -> None:
    started = time.perf_counter()
    with _probe_connection(probe.alias) as conn:
        conn.execute("SELECT 1")
        probe.latency_ms = round((time.perf_counter() - started) * 1000, 1)
        probe.reachable = True
        q = _Statements(conn, probe)
        if heartbeat:
            # A tiny commit that replicas replay: it keeps their "last replayed commit"
            # fresh, so an idle store does not read as ever-growing lag.
            q.one("SELECT pg_logical_emit_message(true, 'storeops-heartbeat', now()::text)")
        row = q.one(_PROBE_SQL)
        if row is None:
            return
        (in_recovery, probe.size_bytes, probe.connections, probe.max_connections, hit) = row[:5]
        probe.role = "replica" if in_recovery else "primary"
        probe.cache_hit_pct = float(hit) if hit is not None else None
        probe.longest_query_s = float(row[5]) if row[5] is not None else 0.0
        probe.longest_transaction_s = float(row[6]) if row[6] is not None else 0.0
        probe.idle_in_transaction = int(row[7])
        statements_installed = bool(row[8])
        probe.wal_lsn = row[9]
        if in_recovery:
            probe.replay_age_s = float(row[10]) if row[10] is not None else None
            probe.receiver_status = row[11]
        probe.blocked = [
            Blocked(
                pid=b["pid"],
                blocked_by=list(b["blocked_by"]),
                wait_s=float(b["wait_s"] or 0),
                query=b["query"],
                blocker_query=b["blocker_query"] or "",
            )
            for b in row[14] or []
        ]
        if not in_recovery:
            probe.standbys = list(row[15] or [])
        _slow_statements(q, probe, installed=statements_installed)
        if probe.kind == "shard":
            _shard_rows(q, probe, estimates=(row[12], row[13]))


def _slow_statements(q: _Statements, probe: Probe, *, installed: bool) -> None:
    if not installed:
        probe.statements_hint = STATEMENTS_HINT
        return
    rows = q.all(
        "SELECT left(query, 160), calls, round(mean_exec_time::numeric, 1),"
        " round(total_exec_time::numeric, 1) FROM pg_stat_statements"
        " ORDER BY mean_exec_time DESC LIMIT 5"
    )
    if rows is None:
        probe.statements_hint = STATEMENTS_HINT
        return
    probe.slow_statements = [
        {"query": r[0], "calls": r[1], "mean_ms": float(r[2]), "total_ms": float(r[3])}
        for r in rows
    ]


def _replica_replication(q: _Statements, probe: Probe) -> None:
    row = q.one(
        "SELECT pg_last_wal_replay_lsn()::text,"
        " extract(epoch FROM now() - pg_last_xact_replay_timestamp()),"
        " (SELECT status FROM pg_stat_wal_receiver)"
    )
    if row:
        probe.wal_lsn, age, probe.receiver_status = row
        probe.replay_age_s = float(age) if age is not None else None


def _shard_rows(q: _Statements, probe: Probe, *, estimates: tuple[Any, Any]) -> None:
    """Rows per shard table from the planner's estimate (a catalog read, not a scan:
    counting 75,000 events cost more than the rest of the probe); counted only for a
    table never analysed. ``manage.py shards`` gives exact counts."""
    tables = ("store_customerprofile", "store_customerevent")
    for table, estimate in zip(tables, estimates, strict=True):
        row = None if estimate is None or estimate < 0 else (estimate,)
        if row is None:
            # Identifiers cannot be bound; these two are constants of our own schema.
            row = q.one(f"SELECT count(*) FROM {table}")  # noqa: S608
        probe.rows[table.removeprefix("store_")] = int(row[0]) if row else None


def _probe_sqlite(probe: Probe) -> None:
    name = str(settings.DATABASES[probe.alias]["NAME"])
    path = Path(name)
    started = time.perf_counter()
    # mode=ro: a probe must never create a missing database file. Test databases are
    # already URIs (shared in-memory databases).
    uri = name if name.startswith("file:") else f"file:{path}?mode=ro"
    conn = sqlite3.connect(uri, uri=True, timeout=deadlines.PROBE_CONNECT_TIMEOUT_S)
    try:
        conn.execute("SELECT 1").fetchone()
        probe.latency_ms = round((time.perf_counter() - started) * 1000, 1)
        probe.reachable = True
        probe.role = "primary" if probe.kind == "primary" else None
        probe.size_bytes = sum(p.stat().st_size for p in (path, Path(f"{path}-wal")) if p.exists())
        if probe.kind == "shard":
            for table in ("store_customerprofile", "store_customerevent"):
                try:
                    count = conn.execute(f"SELECT count(*) FROM {table}").fetchone()  # noqa: S608
                    probe.rows[table.removeprefix("store_")] = int(count[0])
                except sqlite3.Error:
                    probe.rows[table.removeprefix("store_")] = None
    finally:
        conn.close()


def probe_alias(alias: str, *, heartbeat: bool = False) -> Probe:
    probe = probe_alias_placeholder(alias, "")
    try:
        if probe.vendor == "postgresql":
            _probe_postgres(probe, heartbeat=heartbeat)
        else:
            _probe_sqlite(probe)
    except (psycopg.Error, sqlite3.Error, OSError, DatabaseError) as exc:
        probe.reachable = False
        probe.error = deadlines.first_line(exc)
    return probe


def probe_alias_placeholder(alias: str, error: str) -> Probe:
    vendor = "postgresql" if "postgresql" in settings.DATABASES[alias]["ENGINE"] else "sqlite"
    return Probe(alias=alias, kind=_kind(alias), vendor=vendor, error=error)


def replica_lag(probe: Probe, primary_lsn: str | None) -> None:
    """A replica's lag from its replayed position and the primary's, both just read."""
    if probe.receiver_status != "streaming":
        probe.lag_seconds = None  # unknown: a disconnected receiver is not "0 lag"
        probe.lag_bytes = None
        return
    if primary_lsn is None or probe.wal_lsn is None:
        return
    probe.lag_bytes = max(0, lsn_int(primary_lsn) - lsn_int(probe.wal_lsn))
    if probe.lag_bytes == 0:
        probe.lag_seconds = 0.0
    else:
        probe.lag_seconds = max(0.0, probe.replay_age_s or 0.0)


def probe_light(alias: str) -> Probe:
    """Only what routing needs: reachability, role, positions (two cheap queries)."""
    probe = probe_alias_placeholder(alias, "")
    try:
        with deadlines.probe_connect(alias) as conn, deadlines.probe_watched(alias, conn):
            probe.reachable = True
            q = _Statements(conn, probe)
            row = q.one("SELECT pg_is_in_recovery()")
            probe.role = ("replica" if row[0] else "primary") if row else None
            if probe.role == "replica":
                _replica_replication(q, probe)
            elif probe.role == "primary":
                row = q.one("SELECT pg_current_wal_lsn()::text")
                probe.wal_lsn = row[0] if row else None
    except (psycopg.Error, DatabaseError) as exc:
        probe.reachable = False
        probe.error = deadlines.first_line(exc)
    return probe
