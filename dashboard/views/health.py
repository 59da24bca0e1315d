"""Readiness: the per-database status of the shard-health panel, as JSON."""

from __future__ import annotations

from django.contrib.auth.decorators import login_not_required
from django.http import JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from dashboard.http import HtmxHttpRequest
from store.cache_health import probe_cache
from store.health import health_snapshot


@login_not_required
@never_cache
@require_GET
def readyz(request: HtmxHttpRequest) -> JsonResponse:
    """200 while the primary answers (replicas, shards or Redis may be degraded), else 503.

    Load balancers poll this: it shares the panel's cached probes, so polling never
    adds load beyond one probe round per cache interval.
    """
    snapshot = health_snapshot()
    cache = probe_cache()
    status = snapshot.status
    if status == "ok" and cache.status != "ok":
        status = "degraded"  # the console works without Redis, only slower
    body = {
        "status": status,
        # What the shard-health panel shows of the cache, but its reason text.
        "cache": {
            "backend": cache.backend,
            "status": cache.status,
            "reachable": cache.reachable,
            "latency_ms": cache.latency_ms,
            "used_memory": cache.used_memory,
            "max_memory": cache.max_memory,  # 0: no maxmemory
            "evicted_keys": cache.evicted_keys,
            "connected_clients": cache.connected_clients,
            "breaker_open": cache.breaker_open,
            "breaker_last_opened_at": cache.breaker_last_opened_at,
        },
        "checked_at": snapshot.taken_at,
        "databases": {
            probe.alias: {
                "kind": probe.kind,
                "status": probe.status,
                "reachable": probe.reachable,
                "latency_ms": probe.latency_ms,
                "role": probe.role,
                "lag_seconds": probe.lag_seconds,
                "lag_bytes": probe.lag_bytes,
                # No reasons or error texts: this endpoint needs no login, and they
                # name hosts and queries. The shard-health panel shows them to staff.
            }
            for probe in snapshot.probes
        },
    }
    return JsonResponse(body, status=503 if snapshot.status == "down" else 200)
