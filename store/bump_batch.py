"""Version bumps of a burst of writes, sent as one.

Every committed write bumps the counters of the namespaces it touched. Sent one by
one, a stream of adjustments pays a Redis command per write (0.2 ms of a 1 ms
locked adjustment on a 2-core machine: a syscall, and Redis woken beside PostgreSQL)
and makes the ``stock`` counter a hot key that every writer of every process
increments. So a process sends a bump at once only if it sent none in the last
``STOREOPS_BUMP_WINDOW`` seconds; a bump within that window joins the batch that one
background thread sends at the window's end. The first bump after a quiet window goes
at once, as before; a burst costs one bump per window.

What a reader sees is unchanged where it matters: the batch is sent before this
process reads any version (``store.caching`` flushes it first), before a request's
response leaves (``SettleBumpsMiddleware``) and at interpreter exit, so a user's own
write always shows on their next request. Other processes see a batched write at
most one window late, well inside the panels' refresh interval
(``STOREOPS_REFRESH_MIN_INTERVAL``). A process killed within a window loses its
batch: the entries it should have staled live until their TTL.
"""

from __future__ import annotations

import atexit
import logging
import math
import os
import threading
import time
from collections.abc import Callable

logger = logging.getLogger("store.caching")

Send = Callable[[tuple[str, ...], int], None]


class BumpBatch:
    def __init__(self, send: Send, window: Callable[[], float]) -> None:
        self._send = send  # (namespaces, position): one bump of all of them
        self._window = window  # seconds, read on each use (settings may change in tests)
        self._reset()
        os.register_at_fork(after_in_child=self._reset)
        atexit.register(self.flush)

    def _reset(self) -> None:
        # In a forked child: the parent's batch is the parent's to send, and a lock or
        # thread inherited from the parent must not be used.
        self._cond = threading.Condition()
        self._pending: dict[str, None] = {}  # insertion-ordered set
        self._position = 0
        self._sent_at = -math.inf
        self._thread: threading.Thread | None = None

    def add(self, namespaces: tuple[str, ...], position: int) -> None:
        """Bump ``namespaces`` now, or with the batch if one was sent within the window."""
        now = time.monotonic()
        with self._cond:
            was_empty = not self._pending
            self._pending.update(dict.fromkeys(namespaces))
            self._position = max(self._position, position)
            if now - self._sent_at < self._window():
                if self._thread is None:
                    self._thread = threading.Thread(
                        target=self._run, name="bump-batch", daemon=True
                    )
                    self._thread.start()
                elif was_empty:
                    self._cond.notify()
                return
            batch = self._take(now)
        self._send(*batch)

    def flush(self) -> None:
        """Send what is waiting now (before a version read or a response)."""
        with self._cond:
            if not self._pending:
                return
            batch = self._take(time.monotonic())
        self._send(*batch)

    def _take(self, now: float) -> tuple[tuple[str, ...], int]:
        batch = (tuple(self._pending), self._position)
        self._pending, self._position, self._sent_at = {}, 0, now
        return batch

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._pending:
                    self._cond.wait()
                due = self._sent_at + self._window() - time.monotonic()
                if due > 0:
                    self._cond.wait(due)  # then look again: a flush may have sent it
                    continue
                batch = self._take(time.monotonic())
            try:
                self._send(*batch)
            except Exception:
                # The cache's breaker has logged a Redis failure; anything else is a bug,
                # but this thread must go on sending the next batches.
                logger.exception("sending the bump of %s failed", batch[0])
