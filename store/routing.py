"""Database routing: primary/replica with read-your-writes, and customer shards.

Which database a read goes to is decided per call from context variables, so the
decision is safe under WSGI threads and ASGI tasks alike:

- ``use_primary()`` (context manager or decorator, reentrant) forces the primary: the
  one marker for reads a decision is made on (edit forms, conflict views, the
  adjustment form's stock), see ``decides``;
- a request pinned after it wrote carries the primary's WAL position at its write
  (``pin_position``): it reads a replica only once that replica has replayed past it,
  else the primary;
- inside an open ``transaction.atomic()`` on ``default`` reads stay on ``default``;
- auth, sessions, content types and admin log always use the primary.

Both halves of the read-your-writes protocol live here (``read_your_writes`` runs
them around a request; ``dashboard.middleware`` only carries the position in a
signed cookie): a request that committed a write on ``default`` leaves the
primary's position after it (``primary_lsn``), and a later request carrying that
position reads a replica that has replayed past it, or falls back to the primary,
and learns when every replica has passed it (the pin can go). Which replicas are fit
at all is ``store.replicas``'.
"""

from __future__ import annotations

import contextlib
import contextvars
import itertools
import re
from collections.abc import Callable, Iterator
from typing import Any

from django.conf import settings
from django.db import DatabaseError, connections, transaction
from django.db.models import Model
from django.utils.connection import ConnectionDoesNotExist

from store.models import SHARDED_MODELS
from store.probes import lsn_int
from store.replicas import healthy_replicas, replica_connectable, replica_mark_down
from store.sharding import shard_for_user

PRIMARY = "default"
PRIMARY_ONLY_APPS = frozenset({"auth", "sessions", "contenttypes", "admin"})

_forced_primary: contextvars.ContextVar[int] = contextvars.ContextVar("forced_primary", default=0)
# Set by ``read_your_writes`` for the duration of one request.
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
# request is not pinned. Set by ``read_your_writes`` for one request; the cache
# (store.caching) never serves this request an entry computed before it.
pin_position: contextvars.ContextVar[int] = contextvars.ContextVar("pin_position", default=0)

_round_robin: Iterator[int] = itertools.count()


def positions_enabled() -> bool:
    """WAL positions mean something only with PostgreSQL replicas configured."""
    return bool(settings.REPLICA_ALIASES) and connections[PRIMARY].vendor == "postgresql"


def primary_lsn() -> str:
    """The primary's current WAL position as PostgreSQL writes it ("" without
    replicas): every transaction committed before this call is visible to any
    snapshot taken after it."""
    if not positions_enabled():
        return ""
    with connections[PRIMARY].cursor() as cursor:
        cursor.execute("SELECT pg_current_wal_lsn()::text")
        row = cursor.fetchone()
    return str(row[0]) if row and row[0] else ""


def primary_position() -> int:
    """``primary_lsn`` as a number (0 without replicas)."""
    lsn = primary_lsn()
    return lsn_int(lsn) if lsn else 0


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


@contextlib.contextmanager
def use_primary() -> Iterator[None]:
    """Force reads to the primary within the block; nests and works as a decorator.
    A generator: a decorated view gets a fresh one per call, so concurrent requests
    never share (and reset) one another's token."""
    token = _forced_primary.set(_forced_primary.get() + 1)
    try:
        yield
    finally:
        _forced_primary.reset(token)


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
        if replica_connectable(candidate) and (
            not pinned_at or (replica_position(candidate) or 0) >= pinned_at
        ):
            chosen = candidate
            break
    if remembered is not None:  # inside a request: keep this choice for its other reads
        request_replica.set(chosen)
    return chosen


def replica_failed(alias: str) -> None:
    """A read on ``alias`` just failed: this request, and others, read from the primary."""
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


# --- the write half: a request that wrote leaves its position ------------------

# EXECUTE counts as a write: the statement it runs was prepared earlier (the stock
# adjustment is), so its text cannot tell; a wrongly pinned reader only costs a
# primary read.
_WRITE_SQL = re.compile(
    r"^\s*(?:INSERT|UPDATE|DELETE|MERGE|TRUNCATE|CREATE|ALTER|DROP|COPY|EXECUTE)\b",
    re.IGNORECASE,
)
# A data-modifying CTE: WITH ... INSERT/UPDATE/DELETE.
_WRITE_IN_CTE = re.compile(r"^\s*WITH\b.*\b(?:INSERT|UPDATE|DELETE)\b", re.IGNORECASE | re.DOTALL)


def is_write(sql: str) -> bool:
    return bool(_WRITE_SQL.match(sql) or _WRITE_IN_CTE.match(sql))


class RequestWrites:
    """Execute wrapper on ``default`` for one request: notes writes once they are
    durable (a write inside a transaction counts only once ``on_commit`` fires, so a
    rolled-back attempt pins nobody); ``pin_ended``: every replica has replayed past
    the position the request came with."""

    def __init__(self) -> None:
        self.committed = False
        self.pin_ended = False

    def _mark(self) -> None:
        self.committed = True

    def __call__(
        self, execute: Callable[..., Any], sql: str, params: Any, many: bool, context: Any
    ) -> Any:
        result = execute(sql, params, many, context)
        if not self.committed and is_write(sql):
            connection = context["connection"]
            if connection.in_atomic_block:
                # Discarded if the transaction (or this savepoint) rolls back.
                transaction.on_commit(self._mark, using=connection.alias)
            else:
                self._mark()  # autocommit: the statement is already committed
        return result


def pin_seconds() -> float:
    """The pin's upper bound: ``STOREOPS_STICKY_SECONDS``, but never shorter than the
    time after which a replica that has still not replayed the write is unusable
    (further behind than ``STOREOPS_MAX_REPLICA_LAG``, measured every
    ``STOREOPS_REPLICA_CHECK_SECONDS``): a pin that ended earlier could hand the
    client a replica that is within the allowed lag but before its write."""
    floor = settings.STOREOPS_MAX_REPLICA_LAG + settings.STOREOPS_REPLICA_CHECK_SECONDS + 1
    return max(float(settings.STOREOPS_STICKY_SECONDS), floor)


def every_replica_passed(position: int) -> bool:
    """The pin ends once every configured replica (a down one too: it may come back
    behind the write) has replayed past it."""
    healthy = set(healthy_replicas())  # a dead one costs no connect timeout
    return all(
        alias in healthy and (replica_position(alias) or 0) >= position
        for alias in settings.REPLICA_ALIASES
    )


@contextlib.contextmanager
def read_your_writes(pin: str | None) -> Iterator[RequestWrites]:
    """Around one request, both halves of the protocol.

    ``pin`` is what the client's last write left (``primary_lsn()`` then: a position,
    or "" off PostgreSQL, where the pin's timer is all there is), None for no pin.
    Reads in the block see that write: on a replica that has replayed past it, else
    on the primary. The yielded record says whether the block committed a write (pin
    the client at ``primary_lsn()``) and whether the old pin is no longer needed.
    """
    writes = RequestWrites()
    with request_scope():
        position = lsn_int(pin) if pin else 0
        position_token = pin_position.set(position)
        pinned = False
        if pin == "":
            pinned = True  # no position to compare (not PostgreSQL): the timer decides
        elif pin is not None:
            # Only a replica that has replayed past the pin may serve this request.
            pinned = choose_replica() == PRIMARY
            writes.pin_ended = every_replica_passed(position)
        pinned_token = pinned_to_primary.set(pinned)
        try:
            with connections[PRIMARY].execute_wrapper(writes):
                yield writes
        finally:
            pinned_to_primary.reset(pinned_token)
            pin_position.reset(position_token)


# --- routers ------------------------------------------------------------------


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
