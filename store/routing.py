"""Database routers: primary/replica with stickiness, and customer shards.

Which database a read goes to is decided per call from context variables, so the
decision is safe under WSGI threads and ASGI tasks alike:

- ``use_primary()`` (context manager or decorator, reentrant) forces the primary: the
  one marker for reads a decision is made on (edit forms, conflict views, the
  adjustment form's stock), see ``decides``;
- a request pinned after it wrote (set by the stickiness middleware) carries the
  primary's WAL position at its write (``pin_position``): it reads a replica only once
  that replica has replayed past it, else the primary;
- inside an open ``transaction.atomic()`` on ``default`` reads stay on ``default``;
- auth, sessions, content types and admin log always use the primary.
"""

from __future__ import annotations

import contextlib
import contextvars
import itertools
from collections.abc import Iterator
from contextlib import ContextDecorator
from typing import Any

from django.conf import settings
from django.db import DatabaseError, connections
from django.db.models import Model
from django.utils.connection import ConnectionDoesNotExist

from store.models import SHARDED_MODELS
from store.sharding import shard_for_user

PRIMARY = "default"
PRIMARY_ONLY_APPS = frozenset({"auth", "sessions", "contenttypes", "admin"})

_forced_primary: contextvars.ContextVar[int] = contextvars.ContextVar("forced_primary", default=0)
# Set by the stickiness middleware for the duration of one request.
pinned_to_primary: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "pinned_to_primary", default=False
)
# One request reads from one replica: chosen on its first read and kept until the request
# ends. None outside a request (commands, shells): every read chooses afresh, so a
# long-running process never stays on a replica that has since gone down.
NOT_CHOSEN = ""
request_replica: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "request_replica", default=None
)


@contextlib.contextmanager
def request_scope() -> Iterator[None]:
    """Around one request: its reads stick to the first replica chosen, then forget it."""
    token = request_replica.set(NOT_CHOSEN)
    try:
        yield
    finally:
        request_replica.reset(token)


# The WAL position (an integer, see ``lsn_int``) of the client's last write, 0 when the
# request is not pinned. Set by the stickiness middleware for one request; the cache
# (store.caching) never serves this request an entry computed before it.
pin_position: contextvars.ContextVar[int] = contextvars.ContextVar("pin_position", default=0)

_round_robin: Iterator[int] = itertools.count()


def lsn_int(lsn: str) -> int:
    """``'16/B374D848'`` as a number that orders like the WAL position."""
    high, low = lsn.split("/")
    return (int(high, 16) << 32) + int(low, 16)


def positions_enabled() -> bool:
    """WAL positions mean something only with PostgreSQL replicas configured."""
    return bool(settings.REPLICA_ALIASES) and connections[PRIMARY].vendor == "postgresql"


def primary_position() -> int:
    """The primary's current WAL position: every transaction committed before this
    call is visible to any snapshot taken after it (0 without replicas)."""
    if not positions_enabled():
        return 0
    with connections[PRIMARY].cursor() as cursor:
        cursor.execute("SELECT pg_current_wal_lsn()::text")
        row = cursor.fetchone()
    return lsn_int(row[0]) if row and row[0] else 0


def replica_position(alias: str) -> int | None:
    """How far ``alias`` has replayed the primary's WAL; None if it cannot say."""
    try:
        with connections[alias].cursor() as cursor:
            cursor.execute("SELECT pg_last_wal_replay_lsn()::text")
            row = cursor.fetchone()
    except (DatabaseError, ConnectionDoesNotExist):
        return None
    return lsn_int(row[0]) if row and row[0] else None


def read_position() -> int:
    """The position the current context's reads on ``default``'s data are at, at least:
    the primary's for a forced-primary read, else the chosen replica's replay position
    (which only moves forward, so what is read next is at least that new)."""
    if not positions_enabled():
        return 0
    alias = PRIMARY if reads_must_use_primary() else choose_replica()
    if alias == PRIMARY:
        return primary_position()
    return replica_position(alias) or 0


@contextlib.contextmanager
def reading_at_least(position: int) -> Iterator[int]:
    """Reads in the block see everything committed up to ``position``: on the chosen
    replica if it has replayed that far, else on the primary. Yields the position the
    reads are at (what a cache entry computed in the block records)."""
    at = read_position()
    if at >= position:
        yield at
        return
    with use_primary():
        yield primary_position()


class use_primary(ContextDecorator):
    """Force reads to the primary within the block; nests and works as a decorator."""

    def __enter__(self) -> use_primary:
        self._token = _forced_primary.set(_forced_primary.get() + 1)
        return self

    def __exit__(self, *exc: object) -> None:
        _forced_primary.reset(self._token)


# The documented marker for a read that a decision is made on: an edit form's current
# values and version, the conflict view after a 409, the adjustment form's stock. A
# replica behind by a fraction of a second would make the operator decide on (and
# conflict against) a row the primary has long passed. Reads inside a write's
# transaction need no marker: they stay on the primary by themselves.
decides = use_primary


def reads_must_use_primary() -> bool:
    return (
        _forced_primary.get() > 0 or pinned_to_primary.get() or connections[PRIMARY].in_atomic_block
    )


def healthy_replicas() -> list[str]:
    """Replicas fit to serve reads: reachable, streaming, and within the allowed lag.

    The check is cached per process for ``STOREOPS_REPLICA_CHECK_SECONDS`` (see
    ``store.health.replica_state``): a dead replica costs one connect timeout per
    interval, not one per request, and reads return to it once it recovers.
    Only PostgreSQL replicas can be measured; any other alias is taken as it is.
    """
    from store.deadlines import is_down
    from store.health import replica_state

    healthy = []
    for alias in settings.REPLICA_ALIASES:
        engine = settings.DATABASES.get(alias, {}).get("ENGINE", "")
        if "postgresql" not in engine or (not is_down(alias) and replica_state(alias).usable):
            healthy.append(alias)
    return healthy


def choose_replica() -> str:
    """The replica this request reads from (the primary when none is fit).

    A pinned request (``pin_position``) only takes a replica that has replayed past
    its pin. The chosen replica's connection is opened (or health-checked, once per request as
    Django would anyway) before it is promised: a replica that died since its last
    health check is marked down at once and the request reads from another replica
    or the primary instead of failing.
    """
    remembered = request_replica.get()
    if remembered:
        return remembered
    candidates = healthy_replicas()
    start = next(_round_robin)
    chosen = PRIMARY
    pinned_at = pin_position.get()
    for offset in range(len(candidates)):
        candidate = candidates[(start + offset) % len(candidates)]
        if _connectable(candidate) and (
            not pinned_at or (replica_position(candidate) or 0) >= pinned_at
        ):
            chosen = candidate
            break
    if remembered is not None:  # inside a request: keep this choice for its other reads
        request_replica.set(chosen)
    return chosen


def _connectable(alias: str) -> bool:
    if alias not in connections.settings:
        return True  # nothing to connect to (a name used only for routing decisions)
    from store.health import replica_mark_down

    connection = connections[alias]
    try:
        connection.close_if_health_check_failed()
        connection.ensure_connection()
    except DatabaseError as exc:
        connection.close()
        replica_mark_down(alias, str(exc).strip().splitlines()[0] if str(exc) else "error")
        return False
    return True


def replica_failed(alias: str) -> None:
    """A read on ``alias`` just failed: this request, and others, read from the primary."""
    from store.health import replica_mark_down

    replica_mark_down(alias, "a read failed")
    if request_replica.get() is not None:  # inside a request
        request_replica.set(PRIMARY)


def replica_has_replayed(alias: str, lsn: str) -> bool:
    """Has this replica replayed the primary's WAL up to ``lsn`` (a client's last write)?"""
    try:
        with connections[alias].cursor() as cursor:
            cursor.execute("SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", [lsn])
            row = cursor.fetchone()
    except (DatabaseError, ConnectionDoesNotExist):
        return False
    return bool(row and row[0])


def _is_sharded(model: type[Model]) -> bool:
    return model._meta.model_name in SHARDED_MODELS


class ShardRouter:
    """Customer models go to the shard that owns the user's bucket."""

    def _shard(
        self, model: type[Model], hints: dict[str, Any], *, for_write: bool = False
    ) -> str | None:
        if not _is_sharded(model):
            return None
        instance = hints.get("instance")
        if instance is not None:
            # Writes follow the current map (an instance read before a bucket moved
            # must not write to the old shard) and are refused while it moves.
            if for_write:
                return shard_for_user(instance.user_id, for_write=True)
            return instance._state.db or shard_for_user(instance.user_id)
        if "user_id" in hints:
            return shard_for_user(hints["user_id"], for_write=for_write)
        # Guessing a shard would silently read a fraction of the data.
        raise LookupError(
            f"{model.__name__} lives on the shards: use "
            f"{model.__name__}.objects.for_user(user_id) or .using('shard_N')."
        )

    def db_for_read(self, model: type[Model], **hints: Any) -> str | None:
        return self._shard(model, hints)

    def db_for_write(self, model: type[Model], **hints: Any) -> str | None:
        return self._shard(model, hints, for_write=True)

    def allow_relation(self, obj1: Model, obj2: Model, **hints: Any) -> bool | None:
        if _is_sharded(type(obj1)) or _is_sharded(type(obj2)):
            return obj1._state.db == obj2._state.db
        return None

    def allow_migrate(
        self, db: str, app_label: str, model_name: str | None = None, **hints: Any
    ) -> bool | None:
        if db.startswith("shard_"):
            return app_label == "store" and model_name in SHARDED_MODELS
        if app_label == "store" and model_name in SHARDED_MODELS:
            return False
        return None


class PrimaryReplicaRouter:
    """Writes to the primary; reads to a replica unless the context needs the primary."""

    def db_for_read(self, model: type[Model], **hints: Any) -> str | None:
        if model._meta.app_label in PRIMARY_ONLY_APPS or reads_must_use_primary():
            return PRIMARY
        return choose_replica()

    def db_for_write(self, model: type[Model], **hints: Any) -> str | None:
        return PRIMARY

    def allow_relation(self, obj1: Model, obj2: Model, **hints: Any) -> bool | None:
        # Replicas hold the same rows as the primary.
        primary_side = {PRIMARY, *settings.REPLICA_ALIASES}
        return obj1._state.db in primary_side and obj2._state.db in primary_side

    def allow_migrate(
        self, db: str, app_label: str, model_name: str | None = None, **hints: Any
    ) -> bool | None:
        return db == PRIMARY
