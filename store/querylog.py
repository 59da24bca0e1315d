"""Query inspector: which panel ran which SQL, how long it took, and its plan.

One connection execute wrapper does three things for every query:

- prefixes the SQL with ``/* panel:<name> */`` while a panel computes, so
  ``pg_stat_activity`` and the server's slow log name the panel;
- records SQL, parameters, alias and duration into the capture in progress;
- logs queries slower than ``STOREOPS_SLOW_QUERY_MS`` with their panel.

Recorded queries are kept server-side (in the cache, for a few minutes) under a
random id; the browser only ever sends that id back to ask for a plan, never SQL.
"""

from __future__ import annotations

import contextvars
import logging
import re
import secrets
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.db import connections, transaction

logger = logging.getLogger("store.querylog")

LOG_TTL = 600  # seconds a recorded panel run stays inspectable
EXPLAIN_TIMEOUT_MS = 2000
_PANEL_NAME = re.compile(r"[^a-z0-9_-]")


@dataclass
class QueryRecord:
    sql: str
    params: Any
    alias: str
    ms: float


@dataclass
class QueryLog:
    panel: str
    id: str = field(default_factory=lambda: secrets.token_urlsafe(12))
    queries: list[QueryRecord] = field(default_factory=list)

    @property
    def total_ms(self) -> float:
        return sum(q.ms for q in self.queries)

    def flags(self) -> list[tuple[QueryRecord, bool, bool]]:
        """Each query with (similar, duplicate): same SQL is an N+1 signal, same
        SQL and parameters a plain duplicate."""
        by_sql = Counter(q.sql for q in self.queries)
        by_call = Counter((q.sql, repr(q.params)) for q in self.queries)
        return [(q, by_sql[q.sql] > 1, by_call[(q.sql, repr(q.params))] > 1) for q in self.queries]

    @property
    def similar(self) -> int:
        return sum(1 for _, similar, _ in self.flags() if similar)

    @property
    def duplicates(self) -> int:
        return sum(1 for _, _, duplicate in self.flags() if duplicate)


_current: contextvars.ContextVar[QueryLog | None] = contextvars.ContextVar(
    "querylog_current", default=None
)


def _wrapper(
    execute: Callable[..., Any], sql: str, params: Any, many: bool, context: dict[str, Any]
) -> Any:
    log = _current.get()
    if log is not None:
        sql = f"/* panel:{log.panel} */ {sql}"
    started = time.perf_counter()
    try:
        return execute(sql, params, many, context)
    finally:
        ms = (time.perf_counter() - started) * 1000
        alias = context["connection"].alias
        if log is not None:
            log.queries.append(QueryRecord(sql, params, alias, ms))
        if ms >= settings.STOREOPS_SLOW_QUERY_MS:
            logger.warning(
                "slow query panel=%s alias=%s ms=%.1f sql=%s",
                log.panel if log else "-",
                alias,
                ms,
                sql[:2000],
            )


@contextmanager
def instrumented() -> Iterator[None]:
    """Install the wrapper on every configured connection of this thread (once).

    It goes first (outermost), so every other wrapper sees the tagged SQL.
    """
    installed = []
    try:
        for alias in connections:
            wrappers = connections[alias].execute_wrappers
            if _wrapper not in wrappers:
                wrappers.insert(0, _wrapper)
                installed.append(wrappers)
        yield
    finally:
        for wrappers in installed:
            wrappers.remove(_wrapper)


def current_panel() -> str | None:
    """The panel whose queries are being recorded in this context, if any."""
    log = _current.get()
    return log.panel if log else None


@contextmanager
def capture(panel: str) -> Iterator[QueryLog]:
    """Tag and record every query run inside the block as the panel's."""
    log = QueryLog(panel=_PANEL_NAME.sub("", panel))
    token = _current.set(log)
    try:
        with instrumented():
            yield log
    finally:
        _current.reset(token)


def save(log: QueryLog) -> None:
    """Keep a panel run's queries for the inspector (skipped when it ran none)."""
    if log.queries:
        cache.set(f"querylog:{log.id}", log, timeout=LOG_TTL)


def load(log_id: str) -> QueryLog | None:
    found = cache.get(f"querylog:{log_id}")
    return found if isinstance(found, QueryLog) else None


def _strip_comments(sql: str) -> str:
    return re.sub(r"/\*.*?\*/", "", sql, flags=re.S).strip()


def is_select(sql: str) -> bool:
    body = _strip_comments(sql).upper()
    return body.startswith(("SELECT", "WITH")) and ";" not in body.rstrip(";")


def explain(record: QueryRecord, *, analyze: bool = False) -> list[str]:
    """The plan of a recorded query, on the database that ran it.

    Plain EXPLAIN by default. EXPLAIN ANALYZE runs the statement, so it is allowed
    only for a SELECT, on PostgreSQL, inside a transaction that is rolled back and
    under a statement timeout.
    """
    conn = connections[record.alias]
    if conn.vendor == "postgresql":
        if analyze and not is_select(record.sql):
            raise ValueError("EXPLAIN ANALYZE runs only SELECT statements")
        prefix = "EXPLAIN (ANALYZE, BUFFERS) " if analyze else "EXPLAIN "
        with transaction.atomic(using=record.alias), conn.cursor() as cursor:
            cursor.execute(
                "SELECT set_config('statement_timeout', %s, true)", [str(EXPLAIN_TIMEOUT_MS)]
            )
            cursor.execute(prefix + record.sql, record.params)
            rows = [row[0] for row in cursor.fetchall()]
            transaction.set_rollback(True, using=record.alias)
        return rows
    if analyze:
        raise ValueError("EXPLAIN ANALYZE needs PostgreSQL")
    with conn.cursor() as cursor:
        cursor.execute("EXPLAIN QUERY PLAN " + record.sql, record.params)
        return [" ".join(str(col) for col in row) for row in cursor.fetchall()]
