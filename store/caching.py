"""Versioned cache namespaces, stampede-safe shared data, and the Redis breaker.

Every cached fragment or aggregate includes the versions of the data namespaces it
was computed from. A write bumps the namespaces it touched (an atomic INCR) after
its transaction commits, so every dependent entry, for every user, goes stale at
once without scanning keys. On Redis the INCR is sent without waiting for its reply,
which is read before the thread reads versions and before the response leaves.

``get_or_compute`` serves shared data: a stale value at once while one background
thread (``store.refresh``) refreshes it, under a per-key lock that dies with its
holder within seconds.
``BreakerRedisCache`` turns a Redis outage into misses and comes back, with fresh
connections, one breaker period after Redis does.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import logging
import math
import os
import random
import secrets
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

from django.conf import settings
from django.core.cache import cache, caches
from django.db import DatabaseError, connections, transaction
from django.utils import timezone
from django_redis.cache import RedisCache
from django_redis.exceptions import ConnectionInterrupted
from redis.exceptions import LockError, RedisError

from store import refresh as background

NAMESPACES = ("catalog", "stock", "lowstock", "orders", "sales", "outbox", "customers", "access")
# Each as narrow as the change: "stock" is any stock move, "lowstock" only a move
# that touches the low-stock range (stock at or under LOW_STOCK_INDEX_MAX before or
# after); "orders" is the set of open orders and payments received, "sales" net
# revenue (payments, and cancellations of paid orders); "catalog" names and prices.
# "access" is bumped when any user's permissions, groups or flags change
# (store.signals); every per-user fragment is keyed on it, so a revoked button
# disappears at the next render, not after the fragment's TTL.


def _version_key(namespace: str) -> str:
    return f"ns:{namespace}:v"


def _position_key(namespace: str) -> str:
    return f"ns:{namespace}:lsn"


def namespace_versions(*namespaces: str) -> dict[str, int]:
    """Current versions (one round trip); a namespace never bumped is version 0."""
    return namespace_state(*namespaces)[0]


def namespace_state(*namespaces: str) -> tuple[dict[str, int], int]:
    """Current versions, and the primary's WAL position after the newest write to any
    of the namespaces (0 without replicas): data read before that position may miss
    the write, whatever versions it was stamped with. One round trip for both."""
    from store.routing import positions_enabled  # store.routing imports the models

    _check(namespaces)
    settle_bumps()  # this thread reads its own bumps, whatever else it reads
    positions = positions_enabled()
    keys = [_version_key(ns) for ns in namespaces]
    if positions:
        keys += [_position_key(ns) for ns in namespaces]
    found = cache.get_many(keys)
    versions = {ns: int(found.get(_version_key(ns), 0)) for ns in namespaces}
    floor = max((int(found.get(_position_key(ns), 0)) for ns in namespaces), default=0)
    return versions, floor if positions else 0


_positions_lock = threading.Lock()


def bump_now(*namespaces: str, position: int = 0) -> None:
    """Bump the namespaces; ``position`` (the primary's WAL position after the write)
    raises their write positions first, so a reader that sees the new version sees it."""
    _check(namespaces)
    backend = caches["default"]
    if isinstance(backend, BreakerRedisCache):
        backend.incr_versions(tuple(_version_key(ns) for ns in namespaces), position)
        return
    if position:
        with _positions_lock:  # one process: the lock makes "raise to at least" atomic
            for ns in namespaces:
                if int(cache.get(_position_key(ns), 0)) < position:
                    cache.set(_position_key(ns), position, timeout=None)
    for ns in namespaces:
        key = _version_key(ns)
        try:
            cache.incr(key)
        except ValueError:
            # First bump ever (0 -> 1); if another thread created the counter
            # meanwhile, add() refuses and we count on top of it.
            if not cache.add(key, 1, timeout=None):
                cache.incr(key)


def settle_bumps() -> None:
    """Wait for the bumps this thread sent (Redis sends them without waiting)."""
    backend = caches["default"]
    if isinstance(backend, BreakerRedisCache):
        backend.settle_versions()


def bump(*namespaces: str, using: str = "default") -> None:
    """Bump after the current transaction commits (at once outside one).

    A write on the primary also records the primary's WAL position after its commit
    (one query, only with PostgreSQL replicas configured): entries computed on a
    replica that had not replayed that far are stale, whatever versions they carry.
    """
    _check(namespaces)

    def after_commit() -> None:
        from store.routing import primary_position  # store.routing imports the models

        position = 0
        if using == "default":
            try:
                position = primary_position()
            except DatabaseError:
                logger.exception("no WAL position for the bump of %s", namespaces)
        bump_now(*namespaces, position=position)

    transaction.on_commit(after_commit, using=using)


def _check(namespaces: tuple[str, ...]) -> None:
    unknown = set(namespaces) - set(NAMESPACES)
    if unknown:
        raise ValueError(f"unknown cache namespace(s): {sorted(unknown)}")


# --- Circuit breaker ---------------------------------------------------------
# A dead Redis must cost one failed call per cool-down, not a connect timeout per
# call: while the breaker is open every cache operation is a miss (reads) or a
# no-op (writes), and the database serves the panels.

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


def cache_available() -> bool:
    """False while the default cache's breaker is open (the UI says so)."""
    backend = caches["default"]
    return not isinstance(backend, BreakerRedisCache) or backend.available()


# --- Per-panel counters ------------------------------------------------------
# Kept in process memory on purpose: they must keep counting while the cache is
# down, and they describe this worker (the panel footer says so).

_counters: dict[str, Counter[str]] = defaultdict(Counter)
_counters_lock = threading.Lock()


def count(name: str, event: str) -> None:
    with _counters_lock:
        _counters[name][event] += 1


def counters(name: str) -> dict[str, int]:
    with _counters_lock:
        return dict(_counters[name])


# --- Stampede-safe get_or_compute --------------------------------------------

T = TypeVar("T")


@dataclass(frozen=True)
class Computed(Generic[T]):
    value: T
    computed_at: datetime
    # True when served from the cache (fresh, or stale while someone refreshes it).
    hit: bool
    stale: bool = False
    compute_ms: float = 0.0
    # Stale, and a newer value is being computed now (not only due within the
    # refresh interval): asking again in a moment gets it.
    refreshing: bool = False


@dataclass(frozen=True)
class _Envelope:
    value: Any
    computed_at: datetime
    delta: float  # seconds the computation took (XFetch's delta)
    expires: float  # epoch seconds: soft expiry, after which the value is stale
    versions: dict[str, int]
    position: int = 0  # WAL position it was read at (0: no replicas to be behind)


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


def _lock_acquire(key: str, timeout: float) -> Callable[[], None] | None:
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


# --- Background refresh (threads in store.refresh) -----------------------------


def _refresh_in_background(
    store_key: str,
    refresh: Callable[[], None],
    lock_seconds: float,
    label: str,
    *,
    not_before: float = 0.0,
) -> bool:
    """Start ``refresh`` (at ``not_before``, epoch seconds, if that is later) unless
    one runs or is due for the key; False if there is no pool."""
    pool = background.pool()
    if pool is None:
        return False

    def job() -> None:
        release = _lock_acquire(store_key, lock_seconds)
        if release is None:  # another process (or a request's own recompute) has it
            return
        try:
            # An empty context: nothing of the request that triggered the refresh (a
            # primary pin, its replica, a query capture) reaches data shared by everyone.
            contextvars.Context().run(_refresh_once, store_key, refresh, label)
        finally:
            release()

    if not_before > time.time():
        outcome = pool.schedule(store_key, not_before, job)
    else:
        outcome = pool.start(store_key, job)
    if outcome is background.Outcome.BUSY:
        count(label, "refresh-skipped")  # every thread busy: the next request retries
    return True


_failures: dict[str, str] = {}  # key -> the refresh failure last logged for it
_failures_lock = threading.Lock()


def _refresh_once(store_key: str, refresh: Callable[[], None], label: str) -> None:
    from store.routing import request_scope  # store.routing imports the models

    try:
        with request_scope():  # one refresh reads from one replica, like one request
            refresh()
    # Whatever the computation raises: logged with its traceback, never hidden; the
    # stale value stays in place and a later request tries again.
    except Exception as exc:
        count(label, "refresh-failed")
        text = f"{type(exc).__name__}: {exc}"
        with _failures_lock:
            repeated = _failures.get(store_key) == text
            _failures[store_key] = text
        if not repeated:  # once per key and failure, not once per request
            logger.error(
                "background refresh of %s failed; serving the stale value", store_key, exc_info=exc
            )
    else:
        with _failures_lock:
            recovered = _failures.pop(store_key, None) is not None
        if recovered:
            logger.warning("background refresh of %s works again", store_key)


def _in_transaction() -> bool:
    """A refresh on another thread's connection would not see this transaction."""
    return any(conn.in_atomic_block for conn in connections.all(initialized_only=True))


def _must_read_own_writes() -> bool:
    """Pinned to the primary after a write, in a transaction, or under use_primary()."""
    from store.routing import reads_must_use_primary  # store.routing imports the models

    return reads_must_use_primary()


def _pinned_at() -> int:
    from store.routing import pin_position  # store.routing imports the models

    return pin_position.get()


def _position(envelope: _Envelope) -> int:
    return getattr(envelope, "position", 0)  # entries stored before positions existed


def refresh_interval() -> float:
    """Seconds a value invalidated by a write is still served before it is recomputed."""
    return float(getattr(settings, "STOREOPS_REFRESH_MIN_INTERVAL", 1.0))


def get_or_compute(
    key: str,
    fn: Callable[[], T],
    ttl: float,
    stale_ttl: float,
    *,
    namespaces: tuple[str, ...] = (),
    beta: float = 1.0,
    wait: float = 5.0,
    counter: str = "",
) -> Computed[T]:
    """The cached result of ``fn()``; nobody waits for a recompute if a value exists.

    - fresh: served from the cache; XFetch picks a hot key for an early background
      refresh with a probability that grows as expiry nears (and with the compute
      time), and serves it as it is meanwhile;
    - stale (expired, or computed under older ``namespaces`` versions) but still
      stored: served at once, marked stale, while one background refresh runs for
      the key (skipped when the process's refresh threads are all busy: the next
      request tries again); a value invalidated by a write is refreshed once it is
      ``refresh_interval()`` old, so a stream of writes costs one recompute per
      interval, not one per request;
    - cold: the lock winner computes, the others wait up to ``wait`` seconds for
      its result and compute themselves only if it does not come.
    At most one recompute per key runs at a time across processes: a lock that lives
    ``lock_timeout(delta)`` and is renewed while the work runs. Exceptions: a caller
    that must read its own writes (pinned after a write, ``use_primary()``, inside a
    transaction) is never served a value from before the current versions, and waits
    as if cold; inside a transaction a refresh runs in the caller's thread (the lock
    winner's), since another connection would not see the transaction's writes.
    The stored entry outlives ``ttl`` by ``stale_ttl`` so stale serving works.

    Positions (with PostgreSQL replicas): every entry records the WAL position it was
    read at (the primary's, or the replica's replay position). An entry read before
    the newest write to its namespaces is stale for everyone, however it is stamped;
    a pinned caller is never served an entry read before its pin and recomputes at
    once (on a replica that has caught up, else the primary); a computation reads at
    least as new as what it replaces, and never overwrites a newer entry.
    """
    label = counter or key
    versions, written_at = namespace_state(*namespaces) if namespaces else ({}, 0)
    pinned_at = _pinned_at()
    store_key = f"goc:{key}"
    envelope = cache.get(store_key)
    if not isinstance(envelope, _Envelope):
        floor = max(written_at, pinned_at)
        return _compute_once(store_key, fn, ttl, stale_ttl, versions, label, wait, None, floor)
    position = _position(envelope)
    if position < pinned_at:
        # Read before this caller's own write: never theirs, whatever it says.
        return _compute_and_store(
            store_key, fn, ttl, stale_ttl, versions, label, floor=max(written_at, pinned_at)
        )
    current = envelope.versions == versions and position >= written_at
    now = time.time()
    if current and now < envelope.expires:
        early = now - envelope.delta * beta * math.log(1.0 - random.random())
        if early < envelope.expires:
            count(label, "hit")
            return Computed(envelope.value, envelope.computed_at, hit=True)
    if not current and _must_read_own_writes():
        return _compute_once(
            store_key, fn, ttl, stale_ttl, versions, label, wait, envelope.delta, written_at
        )

    def refresh() -> None:
        # Versions read now, before computing: a write landing meanwhile leaves the
        # new value stale, never a pre-write value marked current.
        latest, latest_written = namespace_state(*namespaces) if namespaces else ({}, 0)
        found = cache.get(store_key)
        if (
            isinstance(found, _Envelope)
            and found.versions == latest
            and _position(found) >= latest_written
            and found.computed_at > envelope.computed_at
            and time.time() < found.expires
        ):
            return  # refreshed elsewhere since this request read it
        floor = max(latest_written, position)
        _compute_and_store(
            store_key, fn, ttl, stale_ttl, latest, label, event="refresh", floor=floor
        )

    lock_seconds = lock_timeout(envelope.delta)
    # Invalidated by a write: recomputed at most once per interval, however many
    # requests see it stale meanwhile. Expired (or picked early): refreshed at once.
    not_before = envelope.computed_at.timestamp() + refresh_interval() if not current else 0.0
    if _in_transaction() or not _refresh_in_background(
        store_key, refresh, lock_seconds, label, not_before=not_before
    ):
        release = _lock_acquire(store_key, lock_seconds)
        if release is not None:
            try:
                floor = max(written_at, position)
                return _compute_and_store(
                    store_key, fn, ttl, stale_ttl, versions, label, floor=floor
                )
            finally:
                release()
    stale = not current or now >= envelope.expires
    count(label, "stale" if stale else "hit")
    return Computed(
        envelope.value,
        envelope.computed_at,
        hit=True,
        stale=stale,
        refreshing=stale and not_before <= now,
    )


def _compute_once(
    store_key: str,
    fn: Callable[[], T],
    ttl: float,
    stale_ttl: float,
    versions: dict[str, int],
    label: str,
    wait: float,
    delta: float | None,
    floor: int = 0,
) -> Computed[T]:
    """No usable value: the lock winner computes, the others wait for its result."""
    release = _lock_acquire(store_key, lock_timeout(delta))
    if release is not None:
        try:
            return _compute_and_store(store_key, fn, ttl, stale_ttl, versions, label, floor=floor)
        finally:
            release()
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        time.sleep(0.02)
        found = cache.get(store_key)
        if isinstance(found, _Envelope) and found.versions == versions:
            if _position(found) < floor:
                break  # read before what this caller must see: no use waiting for it
            count(label, "hit")
            return Computed(found.value, found.computed_at, hit=True)
    return _compute_and_store(store_key, fn, ttl, stale_ttl, versions, label, floor=floor)


def _compute_and_store(
    store_key: str,
    fn: Callable[[], T],
    ttl: float,
    stale_ttl: float,
    versions: dict[str, int],
    label: str,
    *,
    event: str = "miss",
    floor: int = 0,
) -> Computed[T]:
    from store.routing import reading_at_least  # store.routing imports the models

    started = time.perf_counter()
    with reading_at_least(floor) as position:
        value = fn()
    delta = time.perf_counter() - started
    computed_at = timezone.now()
    envelope = _Envelope(value, computed_at, delta, time.time() + ttl, versions, position)
    found = cache.get(store_key) if position else None
    # Never write an older read over a newer one (a lagging replica's over the primary's).
    if not (isinstance(found, _Envelope) and _position(found) > position):
        cache.set(store_key, envelope, timeout=ttl + stale_ttl)
    count(label, event)
    return Computed(value, computed_at, hit=False, compute_ms=delta * 1000)
