"""Cache set-ups shared by the cache and panel tests (the root conftest empties the cache)."""

from __future__ import annotations

# The breaker-wrapped Redis backend pointed at a port nothing listens on: a real
# outage (connection refused), not a mock.
DEAD_REDIS = {
    "default": {
        "BACKEND": "store.cache_backend.BreakerRedisCache",
        "LOCATION": "redis://127.0.0.1:6390/0",
        "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 0.5, "SOCKET_TIMEOUT": 0.5},
    }
}
