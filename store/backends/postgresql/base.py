"""Django's PostgreSQL backend with an application-side deadline on every wait.

``ENGINE = "store.backends.postgresql"`` (set by ``config.settings`` for every
PostgreSQL URL). See ``store.deadlines`` for why kernel and server timeouts are not
enough. On top of Django's backend:

- queries, the connection health check, commits and rollbacks run under the alias's
  deadline; an overrun cuts the connection (never reused) and marks the alias down;
- a replica or shard marked down fails at once, without touching the network,
  until a probe on a fresh connection succeeds; connections opened before it was
  marked down are discarded;
- a read that fails on a replica (dead, silent, or cancelled) outside a transaction
  runs again on the primary, and the rest of the request reads from the primary.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

import psycopg
from django.conf import settings
from django.db import InterfaceError, OperationalError, connections
from django.db.backends.postgresql import base, creation
from django.db.backends.utils import CursorWrapper as DjangoCursorWrapper

from store import deadlines

logger = logging.getLogger(__name__)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class _Guarded:
    """Cursor mixin: each statement under the deadline, replica reads fall back."""

    cursor: Any
    db: DatabaseWrapper

    def _execute(self, sql: Any, params: Any, *args: Any) -> Any:
        try:
            with self.db.watch():
                return super()._execute(sql, params, *args)  # type: ignore[misc]
        except (OperationalError, InterfaceError) as exc:
            if not self._may_fall_back():
                raise
            return self._to_primary(exc).execute(sql, params)

    def _executemany(self, sql: Any, param_list: Any, *args: Any) -> Any:
        with self.db.watch():
            return super()._executemany(sql, param_list, *args)  # type: ignore[misc]

    def _may_fall_back(self) -> bool:
        return (
            self.db.alias in settings.REPLICA_ALIASES
            and not self.db.in_atomic_block
            and not isinstance(self.cursor, DjangoCursorWrapper)  # once
            and getattr(self.cursor, "name", None) is None  # not a server-side cursor
        )

    def _to_primary(self, exc: BaseException) -> DjangoCursorWrapper:
        from store import routing

        alias = self.db.alias
        logger.warning("read on %s failed, retried on the primary: %s", alias, _first_line(exc))
        deadlines.trip(alias, _first_line(exc))
        routing.replica_failed(alias)
        # From here on this cursor reads through a primary cursor (fetches included).
        self.cursor = connections[routing.PRIMARY].cursor()
        return self.cursor


class CursorWrapper(_Guarded, DjangoCursorWrapper):
    pass


class CursorDebugWrapper(_Guarded, base.CursorDebugWrapper):
    pass


@contextlib.contextmanager
def _unbounded(connection: DatabaseWrapper) -> Iterator[None]:
    """Creating and dropping test databases (and migrating them) has no deadline."""
    options = connection.settings_dict.setdefault("OPTIONS", {})
    saved = options.pop("options", None)
    connection.close()
    try:
        with deadlines.deadline(0):
            yield
    finally:
        connection.close()
        if saved is not None:
            options["options"] = saved


class DatabaseCreation(creation.DatabaseCreation):
    connection: DatabaseWrapper

    def create_test_db(self, *args: Any, **kwargs: Any) -> Any:
        with _unbounded(self.connection):
            return super().create_test_db(*args, **kwargs)

    def destroy_test_db(self, *args: Any, **kwargs: Any) -> Any:
        from store.probes import probe_connections_close
        from store.sharding import parked_connections_close

        probe_connections_close()  # the health probes' own connections, kept briefly
        parked_connections_close()  # the scatter-gathers' shard connections
        with _unbounded(self.connection):
            return super().destroy_test_db(*args, **kwargs)


class DatabaseWrapper(base.DatabaseWrapper):
    creation_class = DatabaseCreation
    _generation = 0

    @contextlib.contextmanager
    def watch(self, seconds: float | None = None) -> Iterator[None]:
        """The block under the alias's deadline, or ``seconds`` (0: none) when given."""
        if seconds is None:
            seconds = deadlines.seconds_for(self.alias)
        fd = None
        if seconds and self.connection is not None:
            try:
                fd = self.connection.pgconn.socket
            except psycopg.Error:
                fd = None  # already broken: the call fails on its own, at once
        try:
            with deadlines.watched(self.alias, fd, seconds):
                yield
        except deadlines.DeadlineExceeded as exc:
            deadlines.trip(self.alias, str(exc))
            raise

    def _refuse_if_down(self) -> None:
        if not deadlines.has_breaker(self.alias):
            return
        stale = self.connection is not None and self._generation != deadlines.generation(self.alias)
        reason = deadlines.is_down(self.alias)
        if (stale or reason) and self.connection is not None and not self.in_atomic_block:
            self.close()  # opened before the alias was marked down: never reused
        if reason:
            raise OperationalError(
                f"{self.alias} is marked down ({reason}); "
                f"re-checked every {deadlines.PROBE_SECONDS:g} s"
            )

    def _cursor(self, name: str | None = None) -> Any:
        self._refuse_if_down()
        return super()._cursor(name)  # type: ignore[misc]  # untyped in django-stubs

    def get_new_connection(self, conn_params: dict[str, Any]) -> Any:
        self._refuse_if_down()
        self._generation = deadlines.generation(self.alias)
        try:
            return super().get_new_connection(conn_params)
        except psycopg.OperationalError as exc:
            if deadlines.is_silence(str(exc)):
                deadlines.trip(self.alias, _first_line(exc))
            raise

    def is_usable(self) -> bool:
        try:
            with self.watch():
                return super().is_usable()
        except deadlines.DeadlineExceeded:
            return False

    def _commit(self) -> Any:
        with self.watch():
            return super()._commit()  # type: ignore[misc]

    def _rollback(self) -> Any:
        with self.watch():
            return super()._rollback()  # type: ignore[misc]

    def make_cursor(self, cursor: Any) -> CursorWrapper:
        return CursorWrapper(cursor, self)

    def make_debug_cursor(self, cursor: Any) -> CursorDebugWrapper:
        return CursorDebugWrapper(cursor, self)
