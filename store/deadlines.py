"""Every database wait has a deadline, kept by the application itself.

Kernel and server timeouts cannot end every wait: a peer that accepts the TCP
connection and then stays silent (a stuck proxy or pooler in front of the database)
is acknowledged by its own kernel, so keepalives and ``tcp_user_timeout`` never fire,
and a cancel request sent to it is never answered either. So:

- **a watchdog** (one thread per process) shuts down the socket of any call that
  overruns its alias's deadline; the blocked call then fails at once with a clear
  ``OperationalError`` and its connection is broken, so it is never reused;
- **a per-alias breaker** opens when a call overruns (or a connection attempt fails):
  while it is open, replica and shard aliases fail at once (shard pages answer 503,
  replica reads go to the primary), and connections opened before it opened are
  discarded, never reused. It closes when a probe on a *fresh* connection succeeds:
  one every ``PROBE_SECONDS`` at most, in the background, plus every health probe.

The primary has a deadline but no breaker: without it nothing works, so each request
pays its own deadline rather than failing without trying.

``in_parallel`` is the one way to ask several databases at once under one budget
(the cross-shard reads and the health probes).
"""

from __future__ import annotations

import contextlib
import contextvars
import itertools
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Hashable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import TypeVar

import psycopg
from django.conf import settings
from django.db import DatabaseError, OperationalError

logger = logging.getLogger(__name__)

K = TypeVar("K", bound=Hashable)
T = TypeVar("T")

# How far past the server-side statement_timeout the application gives up: the
# server's own cancel (a clear error, the connection kept) normally comes first.
GRACE_SECONDS = 0.5
WATCH_INTERVAL = 0.05
PROBE_SECONDS = 1.0
# A probe's own connection (the breaker's and the health probes'): its limits, and the
# deadline after which the watchdog cuts it.
PROBE_CONNECT_TIMEOUT_S = 1
PROBE_STATEMENT_TIMEOUT_MS = 1000
PROBE_LOCK_TIMEOUT_MS = 300
PROBE_DEADLINE_S = 2.5

_override: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "db_deadline", default=None
)


@contextlib.contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Calls in this block (this thread or task) get ``seconds`` (+ grace), any alias."""
    token = _override.set(seconds)
    try:
        yield
    finally:
        _override.reset(token)


def seconds_for(alias: str) -> float:
    """The deadline of one call on ``alias``; 0 means none."""
    override = _override.get()
    if override is not None:
        return override + GRACE_SECONDS if override else 0.0
    base = float(settings.DATABASES.get(alias, {}).get("STOREOPS_DEADLINE") or 0)
    return base + GRACE_SECONDS if base else 0.0


class DeadlineExceeded(OperationalError):
    """The watchdog cut the call's connection (a ``DatabaseError``, as views expect)."""

    def __init__(self, alias: str, seconds: float) -> None:
        self.alias = alias
        self.seconds = seconds
        super().__init__(
            f"{alias} did not answer within {seconds:g} s; its connection was discarded"
        )


# --- the watchdog ------------------------------------------------------------------

_lock = threading.Lock()
_active: dict[int, tuple[float, int]] = {}  # token -> (monotonic deadline, socket fd)
_cut: set[int] = set()
_tokens = itertools.count()
_watchdog: threading.Thread | None = None


def _shutdown(fd: int) -> None:
    try:
        sock = socket.socket(fileno=os.dup(fd))
    except OSError:
        return
    try:
        # Shared by the blocked call's descriptor: its recv returns at once.
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    finally:
        sock.close()


def _watch() -> None:
    while True:
        time.sleep(WATCH_INTERVAL)
        if not _active:
            continue
        now = time.monotonic()
        with _lock:
            for token, (due, fd) in list(_active.items()):
                if now >= due:
                    # Under the lock: the caller cannot close (and the fd be reused)
                    # before it has taken its token back.
                    del _active[token]
                    _cut.add(token)
                    _shutdown(fd)


def _ensure_watchdog() -> None:
    global _watchdog
    if _watchdog is not None and _watchdog.is_alive():
        return
    with _lock:
        if _watchdog is None or not _watchdog.is_alive():  # also after a fork
            _watchdog = threading.Thread(target=_watch, name="db-deadline", daemon=True)
            _watchdog.start()


@contextlib.contextmanager
def watched(alias: str, fd: int | None, seconds: float) -> Iterator[None]:
    """Cut ``fd`` if the block runs past ``seconds``; then raise ``DeadlineExceeded``."""
    if not seconds or fd is None or fd < 0:
        yield
        return
    _ensure_watchdog()
    token = next(_tokens)
    _active[token] = (time.monotonic() + seconds, fd)
    try:
        yield
    except BaseException as exc:
        # Always take the token back: a block left by GeneratorExit (a streamed export
        # whose client went away) must not have its descriptor cut later, reused.
        if _took_back(token) or not isinstance(exc, Exception):
            raise
        raise DeadlineExceeded(alias, seconds) from exc
    if not _took_back(token):
        raise DeadlineExceeded(alias, seconds)


def _took_back(token: int) -> bool:
    """True if the call finished first; False if the watchdog had cut it."""
    with _lock:
        if _active.pop(token, None) is not None:
            return True
        _cut.discard(token)
        return False


# --- the per-alias breaker -------------------------------------------------------


@dataclass
class _Breaker:
    open: bool = False
    reason: str = ""
    opened_at: float = 0.0
    generation: int = 0  # bumped when it opens: older connections are discarded
    probing: bool = False
    probed_at: float = 0.0


_breakers: dict[str, _Breaker] = {}
_breaker_lock = threading.Lock()


def has_breaker(alias: str) -> bool:
    return alias.startswith(("replica_", "shard_"))


def _breaker(alias: str) -> _Breaker:
    breaker = _breakers.get(alias)
    if breaker is None:
        breaker = _breakers.setdefault(alias, _Breaker())
    return breaker


def generation(alias: str) -> int:
    return _breaker(alias).generation


def is_silence(reason: str) -> bool:
    """A wait that ran out (connect timeout, deadline), not a fast refusal.

    Only silence opens the breaker: a refused connection already fails at once, and
    a breaker would only delay noticing that the server is back."""
    text = reason.lower()
    return "timeout expired" in text or "did not answer within" in text or "no answer" in text


def trip(alias: str, reason: str) -> None:
    """Mark ``alias`` down until a probe on a fresh connection succeeds."""
    if not has_breaker(alias):
        return
    with _breaker_lock:
        breaker = _breaker(alias)
        if not breaker.open:
            logger.warning("database %s marked down: %s", alias, reason)
        breaker.open = True
        breaker.reason = reason
        breaker.opened_at = time.monotonic()
        breaker.generation += 1


def reset(alias: str) -> None:
    """A fresh connection answered: ``alias`` serves again."""
    with _breaker_lock:
        breaker = _breakers.get(alias)
        if breaker is not None and breaker.open:
            logger.info("database %s answers again", alias)
            breaker.open = False
            breaker.reason = ""


def is_down(alias: str) -> str:
    """Why ``alias`` is marked down ("" when it is not); re-probes it when due."""
    breaker = _breakers.get(alias)
    if breaker is None or not breaker.open:
        return ""
    now = time.monotonic()
    with _breaker_lock:
        due = not breaker.probing and now - breaker.probed_at >= PROBE_SECONDS
        if due:
            breaker.probing = True
            breaker.probed_at = now
    if due:
        threading.Thread(target=_probe, args=(alias,), name=f"probe-{alias}", daemon=True).start()
    return breaker.reason


def probe_connect(alias: str) -> psycopg.Connection:
    """A new connection of its own to ``alias`` (never a request's), for probes."""
    conf = settings.DATABASES[alias]
    return psycopg.connect(
        dbname=conf["NAME"],
        user=conf.get("USER") or None,
        password=conf.get("PASSWORD") or None,
        host=conf.get("HOST") or None,
        port=conf.get("PORT") or None,
        connect_timeout=PROBE_CONNECT_TIMEOUT_S,
        application_name="storeops-health",
        options=(
            f"-c statement_timeout={PROBE_STATEMENT_TIMEOUT_MS}"
            f" -c lock_timeout={PROBE_LOCK_TIMEOUT_MS}"
        ),
        autocommit=True,
    )


def probe_watched(alias: str, conn: psycopg.Connection) -> contextlib.AbstractContextManager[None]:
    """A probe connection too is cut at its deadline (a peer may go silent mid-probe)."""
    return watched(alias, conn.pgconn.socket, PROBE_DEADLINE_S)


def first_line(exc: BaseException) -> str:
    """An error as one line, for a status or a log (the class name if it says nothing)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def fresh_connection_answers(alias: str) -> str:
    """ "" if ``alias`` answers ``SELECT 1`` on a new connection, else why not."""
    try:
        with probe_connect(alias) as conn, probe_watched(alias, conn):
            conn.execute("SELECT 1")
    except (psycopg.Error, DatabaseError) as exc:
        return first_line(exc)
    return ""


def _probe(alias: str) -> None:
    try:
        error = fresh_connection_answers(alias)
        if error:
            with _breaker_lock:
                _breaker(alias).reason = f"still not answering: {error}"
        else:
            reset(alias)
    finally:
        with _breaker_lock:
            breaker = _breaker(alias)
            breaker.probing = False
            breaker.probed_at = time.monotonic()


def breakers_reset() -> None:
    """Forget every breaker (between tests)."""
    with _breaker_lock:
        _breakers.clear()


# --- several databases at once, under one budget ----------------------------------


def in_parallel(
    fn: Callable[[K], T], keys: Iterable[K], *, timeout: float | None, name: str
) -> dict[K, Future[T]]:
    """Run ``fn(key)`` for every key, each on a thread of its own, and return within
    ``timeout`` seconds (None: once all are done) whatever they do.

    Returns the finished futures by key (``.result()`` raises what ``fn`` raised); a
    missing key ran late. Its thread is not waited for: its own deadline (the
    server's ``statement_timeout``, the watchdog) ends it, so nothing piles up.
    """
    keys = list(keys)
    if not keys:
        return {}
    executor = ThreadPoolExecutor(max_workers=len(keys), thread_name_prefix=name)
    futures = {executor.submit(fn, key): key for key in keys}
    done, _ = wait(futures, timeout=timeout)
    executor.shutdown(wait=False, cancel_futures=True)
    return {futures[future]: future for future in done}
