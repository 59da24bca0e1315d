"""The cache's health for the shard-health panel and ``/readyz``.

Redis is probed on a fresh connection with a one-second deadline (never through the
cache's pool, which may hold sockets stuck in an outage), and the breaker's state is
reported with it. The console works without Redis (every read misses), so an
unreachable Redis makes readiness "degraded", never "down".
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import redis
from django.core.cache import caches

from store.cache_backend import BreakerRedisCache

PROBE_TIMEOUT_SECONDS = 1.0


@dataclass(frozen=True)
class CacheProbe:
    backend: str  # "redis" or "local memory"
    status: str  # "ok", "warn" or "down"
    reachable: bool
    latency_ms: float | None = None
    used_memory: int | None = None
    max_memory: int | None = None  # 0: no limit
    evicted_keys: int | None = None
    connected_clients: int | None = None
    breaker_open: bool = False
    breaker_openings: int = 0
    breaker_last_opened_at: datetime | None = None
    reason: str = ""

    @property
    def badge(self) -> str:
        return {"ok": "text-bg-success", "warn": "text-bg-warning"}.get(
            self.status, "text-bg-danger"
        )


def probe_cache() -> CacheProbe:
    backend = caches["default"]
    if not isinstance(backend, BreakerRedisCache):
        return CacheProbe(backend="local memory", status="ok", reachable=True)
    breaker = backend.breaker
    state: dict[str, Any] = {
        "breaker_open": breaker.is_open,
        "breaker_openings": breaker.openings,
        "breaker_last_opened_at": breaker.last_opened_at,
    }
    location = backend._server[0] if isinstance(backend._server, list) else backend._server
    client = redis.Redis.from_url(
        str(location),
        socket_timeout=PROBE_TIMEOUT_SECONDS,
        socket_connect_timeout=PROBE_TIMEOUT_SECONDS,
    )
    try:
        started = time.perf_counter()
        client.ping()
        latency = round((time.perf_counter() - started) * 1000, 2)
        info = client.info()
    except redis.RedisError as exc:
        return CacheProbe(
            backend="redis",
            status="down",
            reachable=False,
            reason=f"Redis does not answer ({type(exc).__name__}): every cache read misses",
            **state,
        )
    finally:
        client.close()
    used, limit = int(info.get("used_memory", 0)), int(info.get("maxmemory", 0))
    reasons = []
    if state["breaker_open"]:
        reasons.append("the breaker is open: this worker skips the cache")
    if limit and used >= 0.9 * limit:
        reasons.append(f"memory at {100 * used // limit} % of maxmemory")
    return CacheProbe(
        backend="redis",
        status="warn" if reasons else "ok",
        reachable=True,
        latency_ms=latency,
        used_memory=used,
        max_memory=limit,
        evicted_keys=int(info.get("evicted_keys", 0)),
        connected_clients=int(info.get("connected_clients", 0)),
        reason="; ".join(reasons),
        **state,
    )
