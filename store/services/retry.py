"""Run a write transaction, retrying deadlocks and serialization failures.

Only the outermost transaction can retry: once a deadlock hits, PostgreSQL aborts
the whole transaction, so a nested call simply runs inside its caller's attempt.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import TypeVar

from django.db import DatabaseError, connections, transaction

from store.exceptions import ConcurrencyFailure

logger = logging.getLogger(__name__)
T = TypeVar("T")

MAX_ATTEMPTS = 5
BASE_DELAY = 0.01
MAX_DELAY = 0.25


def is_retryable(exc: BaseException) -> bool:
    """Deadlock (40P01), serialization failure (40001), or SQLite's busy lock."""
    cause = exc.__cause__
    sqlstate = getattr(cause, "sqlstate", None)
    if sqlstate in {"40P01", "40001"}:
        return True
    return "database is locked" in str(exc)


def atomic_with_retry(
    fn: Callable[[], T], *, using: str = "default", attempts: int = MAX_ATTEMPTS
) -> T:
    if connections[using].in_atomic_block:
        # A savepoint keeps this step all-or-nothing; the caller's attempt retries.
        with transaction.atomic(using=using):
            return fn()
    for attempt in range(1, attempts + 1):
        try:
            with transaction.atomic(using=using):
                return fn()
        except DatabaseError as exc:
            if not is_retryable(exc):
                raise
            if attempt == attempts:
                logger.warning("giving up after %d attempts: %s", attempts, exc)
                raise ConcurrencyFailure() from exc
            # Full jitter: colliding transactions spread out instead of meeting again.
            time.sleep(random.uniform(0, min(MAX_DELAY, BASE_DELAY * 2**attempt)))
    raise AssertionError("unreachable")
