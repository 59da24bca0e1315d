"""The per-key recompute lock behind ``store.caching.get_or_compute``: at most one
recompute of a key at a time across processes, and none held for long by a holder
that died."""

from __future__ import annotations

import contextlib
import secrets
import threading
from collections.abc import Callable

from django.core.cache import caches
from django_redis.cache import RedisCache
from redis.exceptions import LockError

from store.cache_backend import CACHE_ERRORS, BreakerRedisCache

# A recompute lock lives a few times the key's last compute time, within a floor and
# a cap, and is renewed while the work runs: a holder killed mid-recompute delays
# the next refresh by its remaining lifetime (seconds), not by a fixed 300 s.
LOCK_FLOOR_SECONDS = 5.0
LOCK_CAP_SECONDS = 60.0
LOCK_FACTOR = 3.0
LOCK_ERRORS: tuple[type[BaseException], ...] = (*CACHE_ERRORS, LockError)


def lock_timeout(delta: float | None) -> float:
    """The lifetime of the recompute lock of a key whose last compute took ``delta``."""
    return min(LOCK_CAP_SECONDS, max(LOCK_FLOOR_SECONDS, LOCK_FACTOR * (delta or 0.0)))


def lock_acquire(key: str, timeout: float) -> Callable[[], None] | None:
    """A non-blocking lock on ``key``, renewed every ``timeout / 3`` s until released.

    django-redis's lock (redis-py's) on Redis, ``cache.add`` with an owner token
    elsewhere. Returns a release callable, or None when someone else holds the lock.
    """
    backend = caches["default"]
    if isinstance(backend, BreakerRedisCache) and not backend.available():
        return _compute_alone  # no cache, no lock: compute, as every caller would
    lock_key = f"lock:{key}"
    if isinstance(backend, RedisCache):
        try:
            # Not thread-local: the renewal thread extends it with the same token.
            lock = backend.lock(lock_key, timeout=timeout, blocking=False, thread_local=False)
            if not lock.acquire(blocking=False):
                return None
        except CACHE_ERRORS as exc:
            if isinstance(backend, BreakerRedisCache):
                backend.breaker.trip(exc)
            return _compute_alone

        def extend() -> bool:
            return bool(lock.reacquire())  # back to the full timeout, if still ours

        def release() -> None:
            with contextlib.suppress(*LOCK_ERRORS):
                lock.release()

        return _renewed(lock_key, timeout, extend, release)
    token = secrets.token_hex(8)
    if not backend.add(lock_key, token, timeout=timeout):
        return None

    def extend_add() -> bool:
        return backend.get(lock_key) == token and bool(backend.touch(lock_key, timeout))

    def release_add() -> None:
        # Only the owner deletes: a lock that timed out may belong to someone else now.
        if backend.get(lock_key) == token:
            backend.delete(lock_key)

    return _renewed(lock_key, timeout, extend_add, release_add)


def _renewed(
    name: str, timeout: float, extend: Callable[[], bool], release: Callable[[], None]
) -> Callable[[], None]:
    """Keep a held lock alive from a small thread until the returned callable runs."""
    done = threading.Event()

    def renew() -> None:
        while not done.wait(timeout / 3):
            try:
                if not extend():
                    return  # expired and taken meanwhile: nothing left to keep
            except LOCK_ERRORS:
                return  # lost with the cache: it expires on its own

    threading.Thread(target=renew, name=f"storeops-renew {name}", daemon=True).start()

    def stop_and_release() -> None:
        done.set()
        release()

    return stop_and_release


def _compute_alone() -> None:
    """Release for 'no lock could be taken because the cache is down'."""
