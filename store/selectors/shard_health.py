"""The shard-health panel's composition: probes, thresholds and cross-shard figures.

Out of ``store.health`` (the probes), which the database router imports: the probes
must not import the caching and selector modules that import the router.
"""

from __future__ import annotations

import contextvars
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.cache import cache

from store import deadlines
from store.cache_health import probe_cache
from store.caching import namespace_versions
from store.health import Probe, Snapshot, health_snapshot, thresholds
from store.selectors.customers import customer_figures


@dataclass(frozen=True)
class ThresholdRow:
    label: str
    warn: str
    critical: str


# The badge a probe's status wears; "down" (and anything unknown) is dark.
PROBE_BADGES = {"ok": "text-bg-success", "warn": "text-bg-warning", "critical": "text-bg-danger"}


@dataclass(frozen=True)
class ProbeRow:
    """A probe as the panel lists it: the probe, and the badge of its status."""

    probe: Probe

    @property
    def badge(self) -> str:
        return PROBE_BADGES.get(self.probe.status, "text-bg-dark")


@dataclass(frozen=True)
class Notice:
    css: str
    text: str


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

    @property
    def probe_rows(self) -> list[ProbeRow]:
        return [ProbeRow(probe) for probe in self.snapshot.probes]

    @property
    def primary(self) -> Probe | None:
        return self.snapshot.probe("default")

    @property
    def attention(self) -> str:
        """What the page's status summary says of the databases ("": all is well)."""
        status = self.snapshot.status
        if status == "ok":
            return ""
        bad = "".join(f" · {p.alias} {p.status}" for p in self.snapshot.probes if p.status != "ok")
        return f"Databases: {status}{bad}"

    @property
    def alert(self) -> Notice | None:
        """The banner over the probes while the databases are not all well."""
        status = self.snapshot.status
        if status == "ok":
            return None
        if status == "down":
            return Notice("alert-danger", "The primary database does not answer.")
        return Notice("alert-warning", "Some databases need attention: see the reasons below.")


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
    return f"health:customers:{namespace_versions('customers')['customers']}"


def _fresh_customer_figures() -> tuple[Any, Any]:
    """Top customers and last-hour events: one scan of every shard (each in parallel)."""
    figures = customer_figures(limit=5)
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
    # Probes, the cross-shard figures and the cache probe run side by side under one
    # budget: the panel takes as long as the slowest part (a probe deadline at worst),
    # not their sum. Only complete figures are kept, and none is used while a shard is
    # down: the partial-results banner must appear as soon as the outage does.
    cached = cache.get(_customer_figures_key())
    if any(deadlines.is_down(alias) for alias in settings.SHARD_ALIASES):
        cached = None
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="shard-health") as pool:
        # The figures and the cache probe in helper threads (the scatter-gather has
        # threads of its own), the probes here, where the panel's query capture is.
        fresh = (
            pool.submit(contextvars.copy_context().run, _fresh_customer_figures)
            if cached is None
            else None
        )
        cache_probe = pool.submit(probe_cache)
        snapshot = health_snapshot()
        shard_down = any(p.kind == "shard" and not p.reachable for p in snapshot.probes)
        if fresh is not None:
            cached = fresh.result()
        elif shard_down:
            # The probe has just marked the shard down: this fails it at once.
            cached = _fresh_customer_figures()
    top_customers, events = cached
    return ShardHealthOverview(
        snapshot=snapshot,
        thresholds=rows,
        top_customers=top_customers,
        events_last_hour=events,
        cache=cache_probe.result(),
    )
