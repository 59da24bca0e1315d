"""Versioned cache namespaces and stampede-safe shared data.

Every cached fragment or aggregate includes the versions of the data namespaces it
was computed from. A write bumps the namespaces it touched (an atomic INCR) after
its transaction commits, so every dependent entry, for every user, goes stale at
once without scanning keys (a burst of writes within a tenth of a second is one bump,
``store.bump_batch``). On Redis the INCR is sent without waiting for its reply,
which is read before the thread reads versions and before the response leaves.

``get_or_compute`` serves shared data: a stale value at once while one background
thread (``store.refresh``) refreshes it, under a per-key lock that dies with its
holder within seconds (``store.cache_lock``). The Redis backend and its breaker
are in ``store.cache_backend``.
"""

from __future__ import annotations

import contextvars
import logging
import math
import random
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

from store import refresh as background
from store.bump_batch import BumpBatch
from store.cache_backend import BreakerRedisCache
from store.cache_lock import lock_acquire, lock_timeout

logger = logging.getLogger("store.caching")

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
    versions, floor, _ = _read_state(namespaces, ())
    return versions, floor


def namespace_versions_and(namespaces: tuple[str, ...], key: str) -> tuple[dict[str, int], Any]:
    """Current versions and one more cache entry (None if absent), in one round trip:
    for an entry that records the versions it was made under, such as a panel's
    rendered fragment, reading both at once saves a round trip per request."""
    versions, _, found = _read_state(namespaces, (key,))
    return versions, found.get(key)


def _read_state(
    namespaces: tuple[str, ...], extra: tuple[str, ...]
) -> tuple[dict[str, int], int, dict[str, Any]]:
    from store.routing import positions_enabled  # store.routing imports the models

    _check(namespaces)
    settle_bumps()  # this thread reads its own bumps, whatever else it reads
    positions = positions_enabled()
    keys = [_version_key(ns) for ns in namespaces]
    if positions:
        keys += [_position_key(ns) for ns in namespaces]
    found = cache.get_many([*keys, *extra])
    versions = {ns: int(found.get(_version_key(ns), 0)) for ns in namespaces}
    floor = max((int(found.get(_position_key(ns), 0)) for ns in namespaces), default=0)
    return versions, floor if positions else 0, found


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
    """Send this process's batched bumps, then wait for the bumps this thread sent
    (Redis sends them without waiting)."""
    _batch.flush()
    backend = caches["default"]
    if isinstance(backend, BreakerRedisCache):
        backend.settle_versions()


def bump(*namespaces: str, using: str = "default") -> None:
    """Bump after the current transaction commits (at once outside one), batched with
    the other bumps of a burst of writes (``store.bump_batch``).

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
        _batch.add(namespaces, position)

    transaction.on_commit(after_commit, using=using)


def _send_batch(namespaces: tuple[str, ...], position: int) -> None:
    bump_now(*namespaces, position=position)


_batch = BumpBatch(_send_batch, window=lambda: settings.STOREOPS_BUMP_WINDOW)


def _check(namespaces: tuple[str, ...]) -> None:
    unknown = set(namespaces) - set(NAMESPACES)
    if unknown:
        raise ValueError(f"unknown cache namespace(s): {sorted(unknown)}")


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
        release = lock_acquire(store_key, lock_seconds)
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
        release = lock_acquire(store_key, lock_seconds)
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
    release = lock_acquire(store_key, lock_timeout(delta))
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
