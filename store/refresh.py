"""Background refreshes: a few threads per process, off the request path.

A stale value is served at once and recomputed here by at most
``STOREOPS_REFRESH_THREADS`` threads per process, created on first use so that every
gunicorn worker starts its own after the fork. A refresh that finds them all busy
is skipped, never queued: the next request for the key tries again.

A refresh can also be due later (``schedule``): ``store.caching`` recomputes a key
invalidated by a write at most once per ``STOREOPS_REFRESH_MIN_INTERVAL``, so a
steady stream of writes costs each panel one recompute per interval, not one per
request that sees it stale.

The threads keep their database connections between refreshes, like request
threads (``CONN_MAX_AGE``): a refresh a second per panel would otherwise open a
connection a second per panel. ``shutdown()`` closes them.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import os
import queue
import threading
import time
from collections.abc import Callable

from django.conf import settings
from django.db import close_old_connections, connections

logger = logging.getLogger(__name__)

Job = Callable[[], None]


class Outcome(enum.Enum):
    STARTED = "started"
    SCHEDULED = "scheduled"
    PENDING = "pending"  # the key is already running or due: nothing new
    BUSY = "busy"  # every thread is taken: skipped


class _Pool:
    def __init__(self, size: int) -> None:
        self.size = size
        self.pid = os.getpid()
        self.lock = threading.Lock()
        self.changed = threading.Condition(self.lock)
        self.running: set[str] = set()  # handed to a thread (queued or running)
        self.due: dict[str, tuple[float, Job]] = {}  # key -> (epoch seconds, job)
        self.closed = False
        self.jobs: queue.SimpleQueue[tuple[str, Job] | None] = queue.SimpleQueue()
        self.workers = [
            threading.Thread(target=self._work, name=f"storeops-refresh-{n}", daemon=True)
            for n in range(size)
        ]
        self.timer = threading.Thread(target=self._time, name="storeops-refresh-timer", daemon=True)
        for thread in (*self.workers, self.timer):
            thread.start()

    @property
    def pending(self) -> int:
        return len(self.running) + len(self.due)

    def _start_locked(self, key: str, job: Job) -> Outcome:
        if key in self.running:
            return Outcome.PENDING
        if self.closed or len(self.running) >= self.size:
            return Outcome.BUSY
        self.running.add(key)
        self.jobs.put((key, job))
        return Outcome.STARTED

    def start(self, key: str, job: Job) -> Outcome:
        with self.lock:
            if key in self.due:
                return Outcome.PENDING  # its time comes soon enough
            return self._start_locked(key, job)

    def schedule(self, key: str, at: float, job: Job) -> Outcome:
        """Run ``job`` at ``at`` (epoch seconds), unless the key is running or due."""
        with self.lock:
            if key in self.running or key in self.due:
                return Outcome.PENDING
            if self.closed:
                return Outcome.BUSY
            self.due[key] = (at, job)
            self.changed.notify_all()
            return Outcome.SCHEDULED

    def _time(self) -> None:
        with self.lock:
            while not self.closed:
                now = time.time()
                for key, (at, job) in list(self.due.items()):
                    if at <= now:
                        del self.due[key]
                        self._start_locked(key, job)  # busy: the next request retries
                soonest = min((at for at, _ in self.due.values()), default=None)
                self.changed.wait(None if soonest is None else max(0.0, soonest - now))

    def _work(self) -> None:
        while (item := self.jobs.get()) is not None:
            key, job = item
            try:
                job()
            except Exception:  # a job logs its own failures; this is the last resort
                logger.exception("background refresh of %s failed", key)
            finally:
                _tidy_connections()
                with self.lock:
                    self.running.discard(key)
                    self.changed.notify_all()
        connections.close_all()

    def shutdown(self, timeout: float) -> None:
        with self.lock:
            self.closed = True
            self.due.clear()
            self.changed.notify_all()
        for _ in self.workers:
            self.jobs.put(None)
        for thread in self.workers:
            thread.join(timeout)


def _tidy_connections() -> None:
    """As after a request: keep this thread's connections unless too old or broken."""
    try:
        close_old_connections()
    except Exception:  # checking a broken one failed too: drop them all
        logger.warning("refresh thread: dropping its database connections", exc_info=True)
        for conn in connections.all(initialized_only=True):
            with contextlib.suppress(Exception):  # already dead: nothing left to close
                conn.close()


_pool: _Pool | None = None
_pool_lock = threading.Lock()


def pool() -> _Pool | None:
    """This process's refresh pool; None when ``STOREOPS_REFRESH_THREADS`` is 0."""
    global _pool  # one pool per process, made on first use
    size = int(getattr(settings, "STOREOPS_REFRESH_THREADS", 2))
    if size <= 0:
        return None
    found = _pool
    if found is None or found.pid != os.getpid() or found.size != size:
        with _pool_lock:
            found = _pool
            # After a fork the parent's threads do not exist here: make our own.
            if found is None or found.pid != os.getpid() or found.size != size:
                if found is not None and found.pid == os.getpid():
                    found.shutdown(timeout=0)  # the running ones finish
                found = _pool = _Pool(size)
    return found


def drain(timeout: float = 10.0) -> bool:
    """Wait until this process has no refresh running or due; False on timeout."""
    found = _pool
    if found is None or found.pid != os.getpid():
        return True
    with found.changed:
        return found.changed.wait_for(lambda: found.pending == 0, timeout)


def shutdown(timeout: float = 10.0) -> None:
    """Stop this process's refresh threads; they close their connections."""
    global _pool
    with _pool_lock:
        found, _pool = _pool, None
    if found is not None and found.pid == os.getpid():
        found.shutdown(timeout)
