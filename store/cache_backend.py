"""The cache backend: django-redis behind a circuit breaker.

A dead Redis must cost one failed call per cool-down, not a connect timeout per
call: while the breaker is open every cache operation is a miss (reads) or a
no-op (writes), and the database serves the panels. ``BreakerRedisCache`` turns a
Redis outage into misses and comes back, with fresh connections, one breaker
period after Redis does. The shard-health panel shows the breaker's state
(``store.cache_health``).
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from django.conf import settings
from django.utils import timezone
from django_redis.cache import RedisCache
from django_redis.exceptions import ConnectionInterrupted
from redis.exceptions import RedisError

# The name operators filter on for cache outages: it predates this module.
logger = logging.getLogger("store.caching")


class CircuitBreaker:
    """Opens on a cache error for ``cooldown`` seconds; logs once per opening.

    Once the cool-down is over, one caller probes (``allows(probe)``) while the others
    still see the cache as down. A probe that answers closes the breaker and starts a
    new ``generation``: connections opened before it are dropped by the probe (pooled
    ones) or on their next use (bump connections), so a socket left dead by the outage
    cannot open the breaker again. A probe that fails opens it for another cool-down.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.openings = 0
        self.last_opened_at: datetime | None = None  # wall clock, for the health view
        self.generation = 0  # bumped at every recovery
        self._open = False
        self._open_until = 0.0
        self._probing = False
        self._lock = threading.Lock()

    @property
    def cooldown(self) -> float:
        return float(getattr(settings, "STOREOPS_CACHE_BREAKER_SECONDS", 5))

    @property
    def is_open(self) -> bool:
        return self._open

    def allows(self, probe: Callable[[], None] | None = None) -> bool:
        """May a cache call go through now? Runs ``probe`` once the cool-down is over.

        Without a probe the caller's own call is the probe (half-open).
        """
        if not self._open:
            return True
        if time.monotonic() < self._open_until:
            return False
        if probe is None:
            return True
        with self._lock:
            if self._probing or not self._open or time.monotonic() < self._open_until:
                return not self._open
            self._probing = True
        try:
            probe()
        except CACHE_ERRORS as exc:
            with self._lock:
                self._probing = False
            self.trip(exc)
            return False
        with self._lock:
            self._probing = False
            self._open = False
            self.generation += 1
        logger.warning("cache %s answers again: circuit closed", self.name)
        return True

    def trip(self, exc: BaseException, generation: int | None = None) -> None:
        """Open the breaker, unless it is open already or the failed call started
        before the last recovery (``generation``): a stale socket, already dropped."""
        with self._lock:
            if generation is not None and generation != self.generation:
                return
            now = time.monotonic()
            if self._open and (now < self._open_until or self._probing):
                return  # another thread opened it already: one warning per opening
            self._open = True
            self._open_until = now + self.cooldown
            self.openings += 1
            self.last_opened_at = timezone.now()
        logger.warning(
            "cache %s unavailable (%s: %s): circuit open for %.0f s, serving from the database",
            self.name,
            type(exc).__name__,
            exc,
            self.cooldown,
        )

    def reset(self) -> None:
        with self._lock:
            self._open = False
            self._open_until = 0.0
            self._probing = False


_breakers: dict[str, CircuitBreaker] = {}
_breakers_lock = threading.Lock()


def breaker_for(location: str) -> CircuitBreaker:
    # Cache objects are per thread; the breaker must be per process and server.
    with _breakers_lock:
        return _breakers.setdefault(location, CircuitBreaker(location))


CACHE_ERRORS: tuple[type[BaseException], ...] = (ConnectionInterrupted, RedisError, OSError)


def _guarded(method_or_name: str | Callable[..., Any], fallback: Any) -> Callable[..., Any]:
    parent: Callable[..., Any] = (
        getattr(RedisCache, method_or_name) if isinstance(method_or_name, str) else method_or_name
    )

    @functools.wraps(parent)
    def method(self: BreakerRedisCache, *args: Any, **kwargs: Any) -> Any:
        breaker = self.breaker
        if not breaker.allows(self.probe):
            return fallback(*args, **kwargs) if callable(fallback) else fallback
        generation = breaker.generation
        try:
            return parent(self, *args, **kwargs)
        except CACHE_ERRORS as exc:
            breaker.trip(exc, generation)
            return fallback(*args, **kwargs) if callable(fallback) else fallback

    return method


def _get_fallback(key: str, default: Any = None, *args: Any, **kwargs: Any) -> Any:
    return default


# Raise a counter to at least ARGV[1] (WAL positions fit a Lua number exactly).
_RAISE_TO = (
    "local c = tonumber(redis.call('GET', KEYS[1]) or '0') "
    "if tonumber(ARGV[1]) > c then redis.call('SET', KEYS[1], ARGV[1]) end return 0"
)


class BreakerRedisCache(RedisCache):
    """django-redis behind a circuit breaker: an outage degrades to misses."""

    def __init__(self, server: str, params: dict[str, Any]) -> None:
        super().__init__(server, params)
        self._packed_incrs: dict[tuple[str, ...], bytes] = {}
        self._bump_conn: Any = None
        self._bump_pid = 0
        self._bump_generation = 0
        self._bump_replies_due = 0

    @property
    def breaker(self) -> CircuitBreaker:
        return breaker_for(str(self._server))

    def available(self) -> bool:
        """False while the breaker is open; probes Redis once the cool-down is over."""
        return self.breaker.allows(self.probe)

    def probe(self) -> None:
        """PING on a fresh connection; if Redis answers, drop every pooled connection.

        The pool is shared by all threads of the process and still holds sockets from
        before the outage. Each would fail once, and each failure would open the
        breaker again for a whole cool-down: drop them all now instead.
        """
        pool = self.client.get_client(write=True).connection_pool
        connection = pool.connection_class(**pool.connection_kwargs)
        try:
            connection.send_command("PING")
            connection.read_response()
        finally:
            connection.disconnect()
        pool.disconnect(inuse_connections=False)  # idle ones: close their sockets now
        pool.reset()  # in-use ones are discarded when released, never reused

    get = _guarded("get", _get_fallback)
    get_many = _guarded("get_many", lambda *a, **k: {})
    set = _guarded("set", False)
    set_many = _guarded("set_many", lambda *a, **k: [])
    add = _guarded("add", False)
    delete = _guarded("delete", False)
    delete_many = _guarded("delete_many", 0)
    incr = _guarded("incr", 0)

    def _incr_versions(self: BreakerRedisCache, keys: tuple[str, ...], position: int = 0) -> None:
        """Send ``INCR`` for each counter; a missing counter becomes 1. With a
        ``position``, each namespace's write position is first raised to it (a Lua
        max, so concurrent writers never lower it) in the same pipeline.

        Every write pays this, so it is sent the cheapest way there is: the commands
        are packed once per key set and written to a connection of this cache object
        (one per thread) that does nothing else. The replies are read later, by
        ``settle_versions()``: before this thread's next bump or version read, and
        at the end of every request (``SettleBumpsMiddleware``). Redis applies the
        INCR when it arrives either way; what is deferred is only learning that it
        worked, so the Redis round trip overlaps the caller's next work instead of
        adding to every write (a 0.1 ms wait on each adjustment here).
        """
        connection = self._bump_connection()
        try:
            self._read_bump_replies(connection)
            packed = self._packed_incrs.get(keys)
            if packed is None:
                commands = [("INCR", self.make_and_validate_key(key)) for key in keys]
                packed = self._packed_incrs[keys] = b"".join(connection.pack_commands(commands))
            if position:
                raises = [
                    (
                        "EVAL",
                        _RAISE_TO,
                        1,
                        self.make_and_validate_key(key.removesuffix(":v") + ":lsn"),
                        position,
                    )
                    for key in keys
                ]
                packed = b"".join(connection.pack_commands(raises)) + packed
                self._bump_replies_due += len(keys)
            connection.send_packed_command([packed], check_health=False)
            self._bump_replies_due += len(keys)
        except BaseException:
            self._drop_bump_connection()
            raise

    def _settle_versions(self: BreakerRedisCache) -> None:
        """Read the replies of the bumps this thread has sent (normally already here)."""
        if self._bump_replies_due:
            try:
                self._read_bump_replies(self._bump_connection())
            except BaseException:
                self._drop_bump_connection()
                raise

    def _bump_connection(self) -> Any:
        pid, generation = os.getpid(), self.breaker.generation
        if self._bump_conn is None or self._bump_pid != pid:
            # After a fork the parent's socket is not ours: start over, owing nothing.
            self._bump_conn = None
        elif self._bump_generation != generation:
            # Opened before Redis went away and came back: its socket is dead.
            self._drop_bump_connection()
            self._bump_conn = None
        if self._bump_conn is None:
            pool = self.client.get_client(write=True).connection_pool
            self._bump_conn = pool.connection_class(**pool.connection_kwargs)
            self._bump_pid, self._bump_generation, self._bump_replies_due = pid, generation, 0
        return self._bump_conn

    def _read_bump_replies(self, connection: Any) -> None:
        while self._bump_replies_due:
            connection.read_response()
            self._bump_replies_due -= 1

    def _drop_bump_connection(self) -> None:
        # A half-read reply stream cannot be trusted: close it and owe nothing.
        if self._bump_conn is not None:
            self._bump_conn.disconnect()
        self._bump_replies_due = 0

    incr_versions = _guarded(_incr_versions, None)
    settle_versions = _guarded(_settle_versions, None)
    decr = _guarded("decr", 0)
    has_key = _guarded("has_key", False)
    touch = _guarded("touch", False)
    clear = _guarded("clear", False)
