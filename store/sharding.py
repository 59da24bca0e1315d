"""Customer data is spread over ``shard_N`` databases by a stable hash of ``user_id``.

Users hash into ``STOREOPS_SHARD_BUCKETS`` (1024) logical buckets; buckets map to
physical shard aliases. The map is stored, one ``ShardBucket`` row per bucket on the
primary, and it is the only source of truth: it is created once (by ``migrate``, or
``manage.py shards init``), splitting the buckets into contiguous ranges over the
shards configured then, and after that only ``manage.py shards move`` changes it.
Adding a shard URL moves nothing (the new shard owns no bucket until buckets are
moved to it); a configuration that lacks a shard owning buckets is refused
(``check_shard_map``, at start-up and on every read of the map), never re-routed.
Every process re-reads the map at most ``STOREOPS_SHARD_MAP_SECONDS`` after a change,
which is why a move waits that long before it relies on a flip.

Cross-shard reads go through ``scatter_gather``: one thread per shard, a per-shard
deadline, and a result that says which shards did not answer (``partial``).
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import DatabaseError, connections
from django.db.backends.base.base import BaseDatabaseWrapper

from store import deadlines
from store.exceptions import BucketMoving

T = TypeVar("T")


def bucket_for_user(user_id: int) -> int:
    """Stable across processes and Python versions (unlike ``hash()``)."""
    digest = hashlib.blake2b(int(user_id).to_bytes(8, "big", signed=False), digest_size=8)
    return int.from_bytes(digest.digest(), "big") % settings.STOREOPS_SHARD_BUCKETS


def default_bucket_ranges() -> dict[str, range]:
    """Contiguous, near-equal bucket ranges, one per shard alias."""
    aliases = settings.SHARD_ALIASES
    buckets = settings.STOREOPS_SHARD_BUCKETS
    ranges = {}
    for index, alias in enumerate(aliases):
        start = index * buckets // len(aliases)
        stop = (index + 1) * buckets // len(aliases)
        ranges[alias] = range(start, stop)
    return ranges


def shard_map_init(using: str = "default") -> int:
    """Store the map for every bucket that has no row yet (the default contiguous
    ranges over the shards configured now); returns how many rows it created.

    Run once: by ``migrate`` (a post_migrate handler) and ``manage.py shards init``.
    Once every bucket has a row, it does nothing, whatever the configuration says.
    """
    from store.models import ShardBucket

    stored = set(ShardBucket.objects.using(using).values_list("bucket", flat=True))
    rows = [
        ShardBucket(bucket=bucket, alias=alias)
        for alias, buckets in default_bucket_ranges().items()
        for bucket in buckets
        if bucket not in stored
    ]
    ShardBucket.objects.using(using).bulk_create(rows, ignore_conflicts=True)
    shard_map_reset()
    return len(rows)


def _spans(buckets: Iterable[int]) -> str:
    spans: list[tuple[int, int]] = []
    for bucket in sorted(buckets):
        if spans and spans[-1][1] == bucket - 1:
            spans[-1] = (spans[-1][0], bucket)
        else:
            spans.append((bucket, bucket))
    return ", ".join(f"{a}-{b}" if a != b else str(a) for a, b in spans)


def map_problems(alias_of: dict[int, str]) -> list[str]:
    """Why the configured shards cannot serve this stored map (empty if they can)."""
    total = settings.STOREOPS_SHARD_BUCKETS
    if not alias_of:
        return [
            "no bucket map is stored: run 'manage.py migrate' (it creates the map once) "
            "or 'manage.py shards init'"
        ]
    problems = []
    missing = sorted(set(range(total)) - set(alias_of))
    if missing:
        problems.append(
            f"buckets {_spans(missing)} have no shard in the stored map: "
            "run 'manage.py shards init' to complete it"
        )
    orphans: dict[str, list[int]] = {}
    for bucket, alias in alias_of.items():
        if alias not in settings.SHARD_ALIASES:
            orphans.setdefault(alias, []).append(bucket)
    for alias, buckets in sorted(orphans.items()):
        spans = _spans(buckets)
        first = spans.split(",")[0].strip()
        problems.append(
            f"the stored bucket map puts buckets {spans} on {alias}, which "
            f"DATABASE_SHARD_URLS does not configure (shards: "
            f"{', '.join(settings.SHARD_ALIASES) or 'none'}). Configure {alias} again "
            f"and move its buckets off first, e.g. 'manage.py shards move --buckets "
            f"{first} --to {settings.SHARD_ALIASES[0] if settings.SHARD_ALIASES else 'shard_0'}'"
            ", before removing it"
        )
    return problems


@dataclass(frozen=True)
class _Overrides:
    alias: dict[int, str]
    frozen: frozenset[int]
    loaded_at: float
    problems: tuple[str, ...] = ()


_map_lock = threading.Lock()
_map: _Overrides | None = None


def _overrides() -> _Overrides:
    global _map
    current = _map
    ttl = settings.STOREOPS_SHARD_MAP_SECONDS
    if current is not None and time.monotonic() - current.loaded_at < ttl:
        return current
    with _map_lock:
        if _map is not None and time.monotonic() - _map.loaded_at < ttl:
            return _map  # another thread refreshed it while we waited
        from store.models import ShardBucket

        # Always the primary: a lagging replica would hide a flip.
        rows = ShardBucket.objects.using("default").values_list("bucket", "alias", "frozen")
        alias_of = {bucket: alias for bucket, alias, _ in rows}
        loaded = _Overrides(
            alias=alias_of,
            frozen=frozenset(bucket for bucket, _, frozen in rows if frozen),
            loaded_at=time.monotonic(),
            problems=tuple(map_problems(alias_of)),
        )
        _map = loaded
        return loaded


def shard_map_reset() -> None:
    """Forget the cached map (after a flip in this process, and between tests)."""
    global _map
    with _map_lock:
        _map = None


def check_shard_map() -> None:
    """Refuse (ImproperlyConfigured, naming the buckets and the fix) a configuration
    whose shards cannot serve every bucket of the stored map. Called at start-up
    (config/wsgi.py, asgi.py, ``demo``) and by ``manage.py check --database default``."""
    shard_map_reset()
    problems = _overrides().problems
    if problems:
        raise ImproperlyConfigured("; ".join(problems))


def shard_for_bucket(bucket: int, *, for_write: bool = False) -> str:
    overrides = _overrides()
    if for_write and bucket in overrides.frozen:
        raise BucketMoving(bucket=bucket)
    alias = overrides.alias.get(bucket)
    if alias is None or alias not in settings.SHARD_ALIASES:
        # Never a guess: a default range or another shard would hide the customer's rows.
        raise ImproperlyConfigured("; ".join(overrides.problems) or f"bucket {bucket}: no shard")
    return alias


def shard_for_user(user_id: int, *, for_write: bool = False) -> str:
    return shard_for_bucket(bucket_for_user(user_id), for_write=for_write)


def bucket_map() -> dict[int, str]:
    """The whole current map, bucket -> alias."""
    return dict(_overrides().alias)  # as stored, a shard no longer configured included


def bucket_ranges(mapping: dict[int, str] | None = None) -> dict[str, list[tuple[int, int]]]:
    """The map as inclusive ``(first, last)`` ranges per alias, for people to read."""
    mapping = mapping if mapping is not None else bucket_map()
    ranges: dict[str, list[tuple[int, int]]] = {alias: [] for alias in settings.SHARD_ALIASES}
    for bucket in sorted(mapping):
        alias = mapping[bucket]
        spans = ranges.setdefault(alias, [])
        if spans and spans[-1][1] == bucket - 1:
            spans[-1] = (spans[-1][0], bucket)
        else:
            spans.append((bucket, bucket))
    return ranges


def frozen_buckets() -> frozenset[int]:
    return _overrides().frozen


# --- scatter-gather ------------------------------------------------------------


@dataclass
class Gathered(Generic[T]):
    """Per-shard results; ``failed`` names the shards that errored or timed out."""

    results: dict[str, T] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)

    @property
    def partial(self) -> bool:
        return bool(self.failed)


# Each shard runs on a thread of its own that ends with the call, and a connection
# dies with its thread: a fresh connection per shard per call was most of a cold
# shard-health panel. A connection that ended its call cleanly (autocommit, no error,
# the shard's default statement timeout, no execute wrapper) is parked here for the
# next call's thread instead, under the settings it was opened with (a changed host,
# port or timeout gets a new one). Adoption re-checks it as a request would (age,
# health check, the shard marked down since): a parked connection is never trusted
# blindly.
PARKED_PER_SHARD = 4
_parked: dict[tuple[str, str], list[BaseDatabaseWrapper]] = {}
_parked_lock = threading.Lock()


def _park_key(alias: str) -> tuple[str, str]:
    return alias, repr(sorted(connections.settings[alias].items()))


def _adopt_parked(key: tuple[str, str]) -> None:
    with _parked_lock:
        kept = _parked.get(key)
        wrapper = kept.pop() if kept else None
    if wrapper is None:
        return
    wrapper.close_if_unusable_or_obsolete()  # too old: closed; else health-checked on use
    connections[key[0]] = wrapper


def _park(key: tuple[str, str], timeout: float) -> bool:
    """Keep this thread's connection for the next call; False: close it."""
    wrapper = connections[key[0]]
    if (
        wrapper.vendor != "postgresql"
        or wrapper.connection is None
        or wrapper.in_atomic_block
        or wrapper.errors_occurred
        or wrapper.execute_wrappers  # a caller's instrumentation must not outlive its call
        or not wrapper.get_autocommit()
        or timeout != wrapper.settings_dict.get("STOREOPS_DEADLINE")  # set_config'd
    ):
        return False
    with _parked_lock:
        kept = _parked.setdefault(key, [])
        if len(kept) >= PARKED_PER_SHARD:
            return False
        if not wrapper.allow_thread_sharing:
            wrapper.inc_thread_sharing()  # used, and closed, by other threads from now on
        kept.append(wrapper)
    return True


def parked_connections_close() -> None:
    """Close every parked connection (before dropping test databases, say)."""
    with _parked_lock:
        kept = [wrapper for wrappers in _parked.values() for wrapper in wrappers]
        _parked.clear()
    for wrapper in kept:
        wrapper.close()


def _run_on_shard(fn: Callable[[str], T], alias: str, timeout: float) -> T:
    key = _park_key(alias)
    _adopt_parked(key)
    parked = False
    try:
        with deadlines.deadline(timeout):
            result = _on_shard(fn, alias, timeout)
        parked = _park(key, timeout)
        return result
    finally:
        if not parked:
            # Threads are short-lived: their connections must not outlive them.
            connections[alias].close()


def _on_shard(fn: Callable[[str], T], alias: str, timeout: float) -> T:
    connection = connections[alias]
    # A shard's connections already carry its default (STOREOPS_SHARD_TIMEOUT): only
    # another budget costs a round trip.
    if connection.vendor == "postgresql" and timeout != connection.settings_dict.get(
        "STOREOPS_DEADLINE"
    ):
        with connection.cursor() as cursor:
            # The server gives up too, so a slow shard never keeps a thread busy.
            cursor.execute(
                "SELECT set_config('statement_timeout', %s, false)",
                [f"{int(timeout * 1000)}ms"],
            )
    return fn(alias)


def scatter_gather(
    fn: Callable[[str], T],
    *,
    aliases: Iterable[str] | None = None,
    timeout: float | None = None,
) -> Gathered[T]:
    """Run ``fn(alias)`` on every shard in parallel; late or failing shards are reported.

    ``fn`` must pass the alias to ``.using()``. Results arrive within ``timeout``
    seconds (``STOREOPS_SHARD_TIMEOUT``) whatever the shards do: stragglers are not
    waited for, their statement timeout ends them server-side.
    """
    budget = settings.STOREOPS_SHARD_TIMEOUT if timeout is None else timeout
    aliases = list(settings.SHARD_ALIASES if aliases is None else aliases)
    finished = deadlines.in_parallel(
        lambda alias: _run_on_shard(fn, alias, budget), aliases, timeout=budget, name="shard"
    )
    gathered: Gathered[T] = Gathered()
    for alias in aliases:
        if alias not in finished:
            gathered.failed[alias] = f"no answer within {budget:g} s"
            continue
        try:
            gathered.results[alias] = finished[alias].result()
        except DatabaseError as exc:
            gathered.failed[alias] = str(exc).strip().splitlines()[0] if str(exc) else "error"
    return gathered
