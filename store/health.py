"""Per-database health probes: the shard-health panel, /readyz and replica routing.

Every probe opens its own short-lived connection with hard limits (connect
timeout, ``statement_timeout``, ``lock_timeout``), and all aliases are probed in
parallel under one overall deadline, so a dead server or a table held by a DDL lock
costs the panel at most a couple of seconds and never piles up connections. The
snapshot is cached for ``STOREOPS_HEALTH_CACHE_SECONDS`` in the shared cache, so
many open dashboards cost the databases one probe round.

Replication lag is measured so that the usual traps do not mislead:

- bytes: the primary's current WAL position minus the replica's replay position,
  both read in the same probe round (a primary that is idle shows 0, not growth);
- seconds: 0 when the replica has replayed everything the primary had written;
  otherwise the age of the last replayed commit. The primary probe writes a
  heartbeat (a transactional ``pg_logical_emit_message``, no table), so that age
  stays meaningful when the store is quiet;
- a replica whose WAL receiver is not streaming is "disconnected": its lag is
  unknown (never 0) and it is not used for reads.
"""

from __future__ import annotations

import contextvars
import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from django.conf import settings
from django.core.cache import cache
from django.db import DatabaseError

from store.samples import sample_record
from store.sharding import bucket_ranges

logger = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 1
STATEMENT_TIMEOUT_MS = 1000
LOCK_TIMEOUT_MS = 300
OVERALL_DEADLINE_S = 2.5
CACHE_KEY = "health:snapshot:v1"

# Shown on the panel next to the statuses, so nobody has to guess what "warn" means.
THRESHOLDS: dict[str, tuple[float, float]] = {
    "latency_ms": (100, 500),
    "connections_pct": (80, 95),
    "lag_seconds": (1.0, 5.0),  # critical is STOREOPS_MAX_REPLICA_LAG (replaced below)
    "transaction_age_s": (60, 300),
    "query_age_s": (30, 120),
    "idle_in_transaction": (1, 5),
    "blocked_queries": (1, 5),
    "cache_hit_pct": (95, 90),  # lower is worse
}
STATUS_ORDER = ["ok", "warn", "critical", "down"]
STATEMENTS_HINT = (
    "pg_stat_statements is not available: add it to shared_preload_libraries in "
    "postgresql.conf, restart PostgreSQL, then run CREATE EXTENSION pg_stat_statements;"
)


def thresholds() -> dict[str, tuple[float, float]]:
    limits = dict(THRESHOLDS)
    max_lag = float(settings.STOREOPS_MAX_REPLICA_LAG)
    limits["lag_seconds"] = (max_lag / 2, max_lag)
    return limits


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


@dataclass
class Snapshot:
    probes: list[Probe]
    taken_at: float
    duration_ms: float

    @property
    def status(self) -> str:
        primary = self.probe("default")
        if primary is None or not primary.reachable:
            return "down"
        worst = max((STATUS_ORDER.index(p.status) for p in self.probes), default=0)
        return "ok" if worst == 0 else "degraded"

    def probe(self, alias: str) -> Probe | None:
        return next((p for p in self.probes if p.alias == alias), None)


def lsn_to_int(lsn: str) -> int:
    high, low = lsn.split("/")
    return (int(high, 16) << 32) + int(low, 16)


def _kind(alias: str) -> str:
    if alias.startswith("replica_"):
        return "replica"
    if alias.startswith("shard_"):
        return "shard"
    return "primary"


def _pg_connect(alias: str) -> psycopg.Connection:
    conf = settings.DATABASES[alias]
    return psycopg.connect(
        dbname=conf["NAME"],
        user=conf.get("USER") or None,
        password=conf.get("PASSWORD") or None,
        host=conf.get("HOST") or None,
        port=conf.get("PORT") or None,
        connect_timeout=CONNECT_TIMEOUT_S,
        application_name="storeops-health",
        options=f"-c statement_timeout={STATEMENT_TIMEOUT_MS} -c lock_timeout={LOCK_TIMEOUT_MS}",
        autocommit=True,
    )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class _Statements:
    """Runs probe statements one by one: one that times out loses only its own field."""

    def __init__(self, conn: psycopg.Connection, probe: Probe) -> None:
        self.conn = conn
        self.probe = probe

    def one(self, sql: str, params: list[Any] | None = None) -> tuple[Any, ...] | None:
        try:
            return self.conn.execute(sql, params).fetchone()  # type: ignore[arg-type]
        except psycopg.errors.QueryCanceled as exc:
            self.probe.reasons.append(f"probe query timed out: {_first_line(exc)}")
        except psycopg.errors.LockNotAvailable:
            self.probe.reasons.append("probe query waited for a lock (DDL in progress?)")
        except psycopg.Error as exc:
            self.probe.reasons.append(f"probe query failed: {_first_line(exc)}")
        return None

    def all(self, sql: str, params: list[Any] | None = None) -> list[tuple[Any, ...]] | None:
        try:
            return self.conn.execute(sql, params).fetchall()  # type: ignore[arg-type]
        except psycopg.Error as exc:
            self.probe.reasons.append(f"probe query failed: {_first_line(exc)}")
            return None


def _probe_postgres(probe: Probe, *, heartbeat: bool) -> None:
    started = time.perf_counter()
    with _pg_connect(probe.alias) as conn:
        conn.execute("SELECT 1")
        probe.latency_ms = round((time.perf_counter() - started) * 1000, 1)
        probe.reachable = True
        q = _Statements(conn, probe)
        row = q.one(
            "SELECT pg_is_in_recovery(), pg_database_size(current_database()),"
            " (SELECT count(*) FROM pg_stat_activity),"
            " current_setting('max_connections')::int,"
            " (SELECT round(100.0 * blks_hit / nullif(blks_hit + blks_read, 0), 2)"
            "    FROM pg_stat_database WHERE datname = current_database())"
        )
        if row:
            in_recovery, probe.size_bytes, probe.connections, probe.max_connections, hit = row
            probe.role = "replica" if in_recovery else "primary"
            probe.cache_hit_pct = float(hit) if hit is not None else None
        row = q.one(
            "SELECT"
            " extract(epoch FROM max(now() - query_start) FILTER (WHERE state = 'active')),"
            " extract(epoch FROM max(now() - xact_start)),"
            " count(*) FILTER (WHERE state LIKE 'idle in transaction%%')"
            " FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            " AND backend_type = 'client backend'"
        )
        if row:
            probe.longest_query_s = float(row[0]) if row[0] is not None else 0.0
            probe.longest_transaction_s = float(row[1]) if row[1] is not None else 0.0
            probe.idle_in_transaction = int(row[2])
        rows = q.all(
            "SELECT w.pid, pg_blocking_pids(w.pid),"
            " extract(epoch FROM now() - w.query_start), left(w.query, 200),"
            " (SELECT left(b.query, 200) FROM pg_stat_activity b"
            "   WHERE b.pid = (pg_blocking_pids(w.pid))[1])"
            " FROM pg_stat_activity w"
            " WHERE w.datname = current_database() AND cardinality(pg_blocking_pids(w.pid)) > 0"
            " ORDER BY w.query_start LIMIT 10"
        )
        probe.blocked = [
            Blocked(
                pid=r[0],
                blocked_by=list(r[1]),
                wait_s=float(r[2] or 0),
                query=r[3],
                blocker_query=r[4] or "",
            )
            for r in rows or []
        ]
        _slow_statements(q, probe)
        if probe.role == "primary":
            _primary_replication(q, probe, heartbeat=heartbeat)
        elif probe.role == "replica":
            _replica_replication(q, probe)
        if probe.kind == "shard":
            _shard_rows(q, probe)


def _slow_statements(q: _Statements, probe: Probe) -> None:
    installed = q.one("SELECT 1 FROM pg_extension WHERE extname = 'pg_stat_statements'")
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


def _primary_replication(q: _Statements, probe: Probe, *, heartbeat: bool) -> None:
    if heartbeat:
        # A tiny commit that replicas replay: it keeps their "last replayed commit"
        # fresh, so an idle store does not read as ever-growing lag.
        q.one("SELECT pg_logical_emit_message(true, 'storeops-heartbeat', now()::text)")
    row = q.one("SELECT pg_current_wal_lsn()::text")
    probe.wal_lsn = row[0] if row else None
    rows = q.all(
        "SELECT application_name, client_addr::text, state,"
        " pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn)::bigint,"
        " extract(epoch FROM write_lag), extract(epoch FROM flush_lag),"
        " extract(epoch FROM replay_lag)"
        " FROM pg_stat_replication ORDER BY client_addr, application_name"
    )
    probe.standbys = [
        {
            "name": r[0],
            "address": r[1],
            "state": r[2],
            "replay_lag_bytes": r[3],
            "write_lag_s": float(r[4]) if r[4] is not None else None,
            "flush_lag_s": float(r[5]) if r[5] is not None else None,
            "replay_lag_s": float(r[6]) if r[6] is not None else None,
        }
        for r in rows or []
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


def _shard_rows(q: _Statements, probe: Probe) -> None:
    """Rows per shard table from the planner's estimate (a catalog read, not a scan:
    counting 75,000 events cost more than the rest of the probe); counted only for a
    table never analysed. ``manage.py shards`` gives exact counts."""
    for table in ("store_customerprofile", "store_customerevent"):
        row = q.one("SELECT reltuples::bigint FROM pg_class WHERE oid = %s::regclass", [table])
        if row is None or row[0] < 0:
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
    conn = sqlite3.connect(uri, uri=True, timeout=CONNECT_TIMEOUT_S)
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
    vendor = "postgresql" if "postgresql" in settings.DATABASES[alias]["ENGINE"] else "sqlite"
    probe = Probe(alias=alias, kind=_kind(alias), vendor=vendor)
    try:
        if vendor == "postgresql":
            _probe_postgres(probe, heartbeat=heartbeat)
        else:
            _probe_sqlite(probe)
    except (psycopg.Error, sqlite3.Error, OSError) as exc:
        probe.reachable = False
        probe.error = _first_line(exc)
    return probe


def _combine(probes: list[Probe]) -> None:
    """Replica lag needs the primary's position; statuses need everything measured."""
    primary = next((p for p in probes if p.alias == "default"), None)
    primary_lsn = primary.wal_lsn if primary and primary.reachable else None
    ranges: dict[str, list[tuple[int, int]]] = {}
    if any(p.kind == "shard" for p in probes):
        try:
            ranges = bucket_ranges()
        except DatabaseError:  # the map lives on the primary; its outage is reported there
            ranges = {}
    for probe in probes:
        if probe.kind == "replica" and probe.reachable and probe.wal_lsn:
            _replica_lag(probe, primary_lsn)
        if probe.kind == "shard":
            probe.bucket_ranges = ranges.get(probe.alias, [])
        _grade(probe)


def _replica_lag(probe: Probe, primary_lsn: str | None) -> None:
    if probe.receiver_status != "streaming":
        probe.lag_seconds = None  # unknown: a disconnected receiver is not "0 lag"
        probe.lag_bytes = None
        return
    if primary_lsn is None or probe.wal_lsn is None:
        return
    probe.lag_bytes = max(0, lsn_to_int(primary_lsn) - lsn_to_int(probe.wal_lsn))
    if probe.lag_bytes == 0:
        probe.lag_seconds = 0.0
    else:
        probe.lag_seconds = max(0.0, probe.replay_age_s or 0.0)


def _level(
    value: float | None, limits: tuple[float, float], *, lower_is_worse: bool = False
) -> int:
    if value is None:
        return 0
    warn, crit = limits
    if lower_is_worse:
        return 2 if value < crit else 1 if value < warn else 0
    return 2 if value >= crit else 1 if value >= warn else 0


def _grade(probe: Probe) -> None:
    if not probe.reachable:
        probe.status = "down"
        probe.reasons.insert(0, f"unreachable: {probe.error}")
        return
    limits = thresholds()
    checks: list[tuple[str, int]] = [
        (f"latency {probe.latency_ms} ms", _level(probe.latency_ms, limits["latency_ms"])),
        (
            f"longest transaction {probe.longest_transaction_s or 0:.0f} s",
            _level(probe.longest_transaction_s, limits["transaction_age_s"]),
        ),
        (
            f"longest query {probe.longest_query_s or 0:.0f} s",
            _level(probe.longest_query_s, limits["query_age_s"]),
        ),
        (
            f"{probe.idle_in_transaction} idle in transaction",
            _level(probe.idle_in_transaction, limits["idle_in_transaction"]),
        ),
        (
            f"{len(probe.blocked)} blocked queries",
            _level(len(probe.blocked), limits["blocked_queries"]),
        ),
        (
            f"cache hit {probe.cache_hit_pct}%",
            _level(probe.cache_hit_pct, limits["cache_hit_pct"], lower_is_worse=True),
        ),
    ]
    if probe.connections is not None and probe.max_connections:
        pct = 100 * probe.connections / probe.max_connections
        checks.append((f"connections {pct:.0f}% of max", _level(pct, limits["connections_pct"])))
    if probe.kind == "replica" and probe.vendor == "postgresql":
        if probe.role != "replica":
            checks.append(("configured as a replica but not in recovery", 2))
        elif probe.receiver_status != "streaming":
            checks.append((f"WAL receiver {probe.receiver_status or 'not running'}", 2))
        else:
            checks.append(
                (f"lag {probe.lag_seconds} s", _level(probe.lag_seconds, limits["lag_seconds"]))
            )
    if probe.kind == "primary" and probe.role == "replica":
        checks.append(("the primary is in recovery (read-only)", 2))
    worst = max((level for _, level in checks), default=0)
    probe.reasons.extend(reason for reason, level in checks if level)
    probe.status = STATUS_ORDER[worst]


def probe_all(aliases: list[str] | None = None) -> Snapshot:
    """Probe every database in parallel; anything not answering in time counts as down."""
    aliases = list(settings.DATABASES) if aliases is None else aliases
    started = time.perf_counter()
    executor = ThreadPoolExecutor(max_workers=len(aliases), thread_name_prefix="health")
    futures = {
        executor.submit(probe_alias, alias, heartbeat=alias == "default"): alias
        for alias in aliases
    }
    done, _ = wait(futures, timeout=OVERALL_DEADLINE_S)
    executor.shutdown(wait=False, cancel_futures=True)
    probes = []
    for future, alias in futures.items():
        if future in done:
            probes.append(future.result())
        else:
            probe = probe_alias_placeholder(alias, f"no answer within {OVERALL_DEADLINE_S} s")
            probes.append(probe)
    _combine(probes)
    snapshot = Snapshot(
        probes=probes,
        taken_at=time.time(),
        duration_ms=round((time.perf_counter() - started) * 1000, 1),
    )
    _remember_replicas(snapshot)
    return snapshot


def probe_alias_placeholder(alias: str, error: str) -> Probe:
    vendor = "postgresql" if "postgresql" in settings.DATABASES[alias]["ENGINE"] else "sqlite"
    return Probe(alias=alias, kind=_kind(alias), vendor=vendor, error=error)


_snapshot_lock = threading.Lock()


def health_snapshot(*, fresh: bool = False) -> Snapshot:
    """The cached snapshot; one thread per process probes when it is stale."""
    if not fresh:
        cached = cache.get(CACHE_KEY)
        if cached is not None:
            return cached
    with _snapshot_lock:
        cached = None if fresh else cache.get(CACHE_KEY)
        if cached is not None:
            return cached
        snapshot = probe_all()
        cache.set(CACHE_KEY, snapshot, timeout=settings.STOREOPS_HEALTH_CACHE_SECONDS)
        _sample(snapshot)
        return snapshot


def _sample(snapshot: Snapshot) -> None:
    """Keep this probe's latencies and replica lags for the last-hour chart."""
    values: dict[str, float | None] = {}
    for probe in snapshot.probes:
        values[f"latency:{probe.alias}"] = probe.latency_ms
        if probe.kind == "replica":
            values[f"lag:{probe.alias}"] = probe.lag_seconds
    sample_record("databases", values, at=snapshot.taken_at)


# --- replica state for the router ----------------------------------------------


@dataclass(frozen=True)
class ReplicaState:
    alias: str
    usable: bool
    lag_seconds: float | None
    reason: str
    checked_at: float


_replica_states: dict[str, ReplicaState] = {}
_replica_lock = threading.Lock()


def _state_from(probe: Probe) -> ReplicaState:
    max_lag = float(settings.STOREOPS_MAX_REPLICA_LAG)
    if not probe.reachable:
        usable, reason = False, f"unreachable: {probe.error}"
    elif probe.vendor == "postgresql" and probe.role != "replica":
        usable, reason = False, "not in recovery"
    elif probe.vendor == "postgresql" and probe.receiver_status != "streaming":
        usable, reason = False, "WAL receiver not streaming"
    elif probe.lag_seconds is None and probe.vendor == "postgresql":
        usable, reason = False, "lag unknown"
    elif probe.lag_seconds is not None and probe.lag_seconds > max_lag:
        usable, reason = False, f"lag {probe.lag_seconds:.1f} s > {max_lag:g} s"
    else:
        usable, reason = True, ""
    return ReplicaState(probe.alias, usable, probe.lag_seconds, reason, time.monotonic())


def _remember_replicas(snapshot: Snapshot) -> None:
    for probe in snapshot.probes:
        if probe.kind == "replica":
            _replica_states[probe.alias] = _state_from(probe)


def replica_state(alias: str) -> ReplicaState:
    """Cached per process for ``STOREOPS_REPLICA_CHECK_SECONDS``; one thread re-checks."""
    ttl = settings.STOREOPS_REPLICA_CHECK_SECONDS
    state = _replica_states.get(alias)
    if state is not None and time.monotonic() - state.checked_at < ttl:
        return state
    if not _replica_lock.acquire(blocking=state is None):
        return state  # type: ignore[return-value]  # someone is re-checking: use the old one
    try:
        state = _replica_states.get(alias)
        if state is not None and time.monotonic() - state.checked_at < ttl:
            return state
        probes = _parallel([alias, "default"], _light_probe)
        _combine_lag(probes[alias], probes["default"])
        previous, state = state, _state_from(probes[alias])
        if previous is None or previous.usable != state.usable:  # log changes, not every check
            if state.usable:
                logger.info("replica %s serves reads again", alias)
            else:
                logger.warning("replica %s skipped: %s", alias, state.reason)
        _replica_states[alias] = state
        return state
    finally:
        _replica_lock.release()


def replica_mark_down(alias: str, reason: str) -> None:
    """A read just failed to connect: skip the replica until its next check is due."""
    logger.warning("replica %s skipped: %s", alias, reason)
    _replica_states[alias] = ReplicaState(alias, False, None, reason, time.monotonic())


def replica_states_reset() -> None:
    _replica_states.clear()


def _light_probe(alias: str) -> Probe:
    """Only what routing needs: reachability, role, positions (two cheap queries)."""
    probe = probe_alias_placeholder(alias, "")
    try:
        with _pg_connect(alias) as conn:
            probe.reachable = True
            q = _Statements(conn, probe)
            row = q.one("SELECT pg_is_in_recovery()")
            probe.role = ("replica" if row[0] else "primary") if row else None
            if probe.role == "replica":
                _replica_replication(q, probe)
            elif probe.role == "primary":
                row = q.one("SELECT pg_current_wal_lsn()::text")
                probe.wal_lsn = row[0] if row else None
    except psycopg.Error as exc:
        probe.reachable = False
        probe.error = _first_line(exc)
    return probe


def _combine_lag(replica: Probe, primary: Probe) -> None:
    if replica.reachable and replica.wal_lsn:
        _replica_lag(replica, primary.wal_lsn if primary.reachable else None)


def _parallel(aliases: list[str], fn: Callable[[str], Probe]) -> dict[str, Probe]:
    with ThreadPoolExecutor(max_workers=len(aliases)) as executor:
        return dict(zip(aliases, executor.map(fn, aliases), strict=True))


# --- the shard-health panel ----------------------------------------------------------


@dataclass(frozen=True)
class ThresholdRow:
    label: str
    warn: str
    critical: str


@dataclass
class ShardHealthOverview:
    snapshot: Snapshot
    thresholds: list[ThresholdRow]
    top_customers: Any  # CrossShard[list[TopCustomer]]
    events_last_hour: Any  # CrossShard[dict[str, int]]
    cache: Any = None  # store.cache_health.CacheProbe

    @property
    def partial_shards(self) -> dict[str, str]:
        return {**self.top_customers.failed, **self.events_last_hour.failed}


_THRESHOLD_LABELS = {
    "latency_ms": ("Round trip", "≥ {} ms"),
    "connections_pct": ("Connections used", "≥ {} % of max"),
    "lag_seconds": ("Replica lag", "≥ {} s"),
    "transaction_age_s": ("Oldest transaction", "≥ {} s"),
    "query_age_s": ("Longest query", "≥ {} s"),
    "idle_in_transaction": ("Idle in transaction", "≥ {} sessions"),
    "blocked_queries": ("Blocked queries", "≥ {}"),
    "cache_hit_pct": ("Cache hit ratio", "< {} %"),
}


CUSTOMER_FIGURES_SECONDS = 15


def _customer_figures_key() -> str:
    from store.caching import namespace_versions

    return f"health:customers:{namespace_versions('customers')['customers']}"


def _fresh_customer_figures() -> tuple[Any, Any]:
    """Top customers and last-hour events: a scan of every shard (each in parallel)."""
    from store.selectors.customers import customer_events_last_hour, top_customers_by_lifetime_value

    figures = (top_customers_by_lifetime_value(limit=5), customer_events_last_hour())
    if not any(f.partial for f in figures):
        cache.set(_customer_figures_key(), figures, timeout=CUSTOMER_FIGURES_SECONDS)
    return figures


def shard_health_overview() -> ShardHealthOverview:
    """Everything the shard-health panel shows: probes, thresholds, cross-shard figures."""
    rows = [
        ThresholdRow(label, fmt.format(f"{warn:g}"), fmt.format(f"{crit:g}"))
        for key, (warn, crit) in thresholds().items()
        for label, fmt in [_THRESHOLD_LABELS[key]]
    ]
    from store.cache_health import probe_cache

    # The probes and the cross-shard figures run side by side: the panel takes as long
    # as the slower of the two, not their sum. Only complete figures are kept, and
    # none is used while a shard probe says "down": the partial-results banner must
    # appear as soon as the outage does.
    cached = cache.get(_customer_figures_key())
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="shard-health") as pool:
        # The figures in a helper thread (their scatter-gather has threads of its
        # own), the probes here, where the panel's query capture is installed.
        fresh = (
            pool.submit(contextvars.copy_context().run, _fresh_customer_figures)
            if cached is None
            else None
        )
        snapshot = health_snapshot()
        shard_down = any(p.kind == "shard" and not p.reachable for p in snapshot.probes)
        if fresh is not None:
            cached = fresh.result()
        elif shard_down:
            cached = _fresh_customer_figures()
    top_customers, events = cached
    return ShardHealthOverview(
        snapshot=snapshot,
        thresholds=rows,
        top_customers=top_customers,
        events_last_hour=events,
        cache=probe_cache(),
    )
