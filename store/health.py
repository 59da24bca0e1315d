"""Database health: a graded round of probes for the shard-health panel and /readyz.

All aliases are probed in parallel (``store.probes``, one connection of its own
each) under one overall deadline, so a dead server costs the panel at most a couple
of seconds. The snapshot is cached for ``STOREOPS_HEALTH_CACHE_SECONDS`` in the shared
cache, so many open dashboards cost the databases one probe round.

Replication lag is measured so that the usual traps do not mislead:

- bytes: the primary's current WAL position minus the replica's replay position,
  both read in the same probe round (a primary that is idle shows 0, not growth);
- seconds: 0 when the replica has replayed everything the primary had written;
  otherwise the age of the last replayed commit. The primary probe writes a
  heartbeat (a transactional ``pg_logical_emit_message``, no table), so that age
  stays meaningful when the store is quiet;
- a replica whose WAL receiver is not streaming is "disconnected": its lag is
  unknown (never 0) and it is not used for reads.

What a round finds also feeds the router (``store.replicas``) and the per-alias
breakers (``store.deadlines``): a probe is a fresh connection.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from django.conf import settings
from django.core.cache import cache
from django.db import DatabaseError

from store import deadlines
from store.probes import (
    OVERALL_DEADLINE_S,
    Probe,
    probe_alias,
    probe_alias_placeholder,
    replica_lag,
)
from store.replicas import replicas_remember
from store.samples import sample_record
from store.sharding import bucket_ranges

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


def thresholds() -> dict[str, tuple[float, float]]:
    limits = dict(THRESHOLDS)
    max_lag = float(settings.STOREOPS_MAX_REPLICA_LAG)
    limits["lag_seconds"] = (max_lag / 2, max_lag)
    return limits


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
            replica_lag(probe, primary_lsn)
        if probe.kind == "shard":
            probe.bucket_ranges = ranges.get(probe.alias, [])
        _grade(probe)


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
    # The heartbeat (a commit) only matters to replicas' lag.
    heartbeat = bool(settings.REPLICA_ALIASES)
    finished = deadlines.in_parallel(
        lambda alias: probe_alias(alias, heartbeat=heartbeat and alias == "default"),
        aliases,
        timeout=OVERALL_DEADLINE_S,
        name="health",
    )
    probes = [
        finished[alias].result()
        if alias in finished
        else probe_alias_placeholder(alias, f"no answer within {OVERALL_DEADLINE_S} s")
        for alias in aliases
    ]
    _combine(probes)
    snapshot = Snapshot(
        probes=probes,
        taken_at=time.time(),
        duration_ms=round((time.perf_counter() - started) * 1000, 1),
    )
    replicas_remember(probes)
    _breakers_follow(probes)
    return snapshot


def _breakers_follow(probes: list[Probe]) -> None:
    """A probe is a fresh connection: what it finds opens or closes the breaker that
    requests obey (store/deadlines.py)."""
    for probe in probes:
        if probe.vendor == "postgresql" and deadlines.has_breaker(probe.alias):
            if probe.reachable:
                deadlines.reset(probe.alias)
            elif deadlines.is_silence(probe.error):
                deadlines.trip(probe.alias, f"health probe: {probe.error}")


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
