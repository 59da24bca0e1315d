"""Read-your-writes across replicas: pin a client to the primary after it wrote.

A request pins its client when it used an unsafe method *and* committed a write on
``default`` (seen through an execute wrapper; a write inside a transaction counts
only once ``on_commit`` fires, so a rolled-back attempt pins nobody). Whatever the
status code: HTMX POSTs answer 200.

The pin is a position, not a timer: on PostgreSQL the signed cookie (never the
session, whose reads must not depend on a replica) carries the primary's WAL
position after the write. A pinned request reads from a replica that has replayed
past it, else from the primary; its cached data is never older than it
(store.caching); the cookie is dropped as soon as every replica has passed it.
``pin_seconds()`` bounds it in time (off PostgreSQL the timer is all there is).
The decision lives in ``store.routing`` context variables, set and reset
around each request, so it cannot leak to another request or thread.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.core.exceptions import BadRequest, SuspiciousOperation
from django.db import connections, transaction
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest
from django.http.multipartparser import MultiPartParserError

from store import querylog, routing
from store.caching import settle_bumps

logger = logging.getLogger(__name__)

COOKIE = "storeops_primary"
SALT = "storeops.stickiness"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
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


class _CommittedWrites:
    """Execute wrapper on ``default``: notes writes once they are durable."""

    def __init__(self) -> None:
        self.committed = False

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


def _primary_wal_lsn() -> str:
    primary = connections[routing.PRIMARY]
    if primary.vendor != "postgresql" or not settings.REPLICA_ALIASES:
        return ""
    with primary.cursor() as cursor:
        cursor.execute("SELECT pg_current_wal_lsn()::text")
        row = cursor.fetchone()
    return str(row[0]) if row else ""


def pin_seconds() -> float:
    """The pin's upper bound: ``STOREOPS_STICKY_SECONDS``, but never shorter than the
    time after which a replica that has still not replayed the write is unusable
    (further behind than ``STOREOPS_MAX_REPLICA_LAG``, measured every
    ``STOREOPS_REPLICA_CHECK_SECONDS``): a pin that ended earlier could hand the
    client a replica that is within the allowed lag but before its write."""
    floor = settings.STOREOPS_MAX_REPLICA_LAG + settings.STOREOPS_REPLICA_CHECK_SECONDS + 1
    return max(float(settings.STOREOPS_STICKY_SECONDS), floor)


class PrimaryStickinessMiddleware:
    sync_capable = True
    async_capable = False

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        writes = _CommittedWrites()
        with routing.request_scope():
            pin = self._read_pin(request)
            position = routing.lsn_int(pin) if pin else 0
            position_token = routing.pin_position.set(position)
            pinned, ended = False, False
            if pin == "":
                pinned = True  # no position to compare (not PostgreSQL): the timer decides
            elif pin is not None:
                # Only a replica that has replayed past the pin may serve this request.
                pinned = routing.choose_replica() == routing.PRIMARY
                ended = self._every_replica_passed(position)
            pinned_token = routing.pinned_to_primary.set(pinned)
            try:
                with connections[routing.PRIMARY].execute_wrapper(writes):
                    response = self.get_response(request)
            finally:
                routing.pinned_to_primary.reset(pinned_token)
                routing.pin_position.reset(position_token)
        if writes.committed and request.method not in SAFE_METHODS:
            self._pin(response)
        elif ended:
            response.delete_cookie(COOKIE, samesite="Lax")  # every replica caught up
        return response

    @staticmethod
    def _read_pin(request: HttpRequest) -> str | None:
        """The LSN written by the client's last write ("" off PostgreSQL), or None.

        An expired or tampered cookie reads as no pin.
        """
        value = request.get_signed_cookie(
            COOKIE, default=None, salt=SALT, max_age=timedelta(seconds=pin_seconds())
        )
        if not isinstance(value, str) or (value and "/" not in value):
            return None
        return value

    @staticmethod
    def _every_replica_passed(position: int) -> bool:
        """The pin ends once every configured replica (a down one too: it may come
        back behind the write) has replayed past it."""
        healthy = set(routing.healthy_replicas())  # a dead one costs no connect timeout
        return all(
            alias in healthy and (routing.replica_position(alias) or 0) >= position
            for alias in settings.REPLICA_ALIASES
        )

    @staticmethod
    def _pin(response: HttpResponse) -> None:
        response.set_signed_cookie(
            COOKIE,
            _primary_wal_lsn(),
            salt=SALT,
            max_age=math.ceil(pin_seconds()),
            httponly=True,
            secure=settings.SESSION_COOKIE_SECURE,
            samesite="Lax",
        )


class UnreadableBodyMiddleware:
    """A POST body Django cannot parse answers 400 with Django's own reason.

    Django raises ``BadRequest`` (a form declaring ``charset=utf-16``) or a
    ``SuspiciousOperation`` (too many fields, a body over the size limit) the first time
    ``request.POST`` is read, and its 400 and 500 views, which read it again for their
    CSRF token, raise once more: a 500, even for an anonymous login POST. Parsing it
    once here, before the CSRF check or a view does, keeps Django's status and gives
    its reason (a broken multipart body too, which Django answers 400 without one).
    Only POST: Django parses no other method's body into ``request.POST``.
    """

    sync_capable = True
    async_capable = False

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.method == "POST":
            try:
                request.POST  # noqa: B018 - parsed now so that a failure is answered here
            except (BadRequest, SuspiciousOperation, MultiPartParserError) as exc:
                logger.warning("unreadable POST body on %s: %s", request.path, exc)
                return HttpResponseBadRequest(
                    f"Bad request: {exc} Nothing was done.",
                    content_type="text/plain; charset=utf-8",
                )
        return self.get_response(request)


# Every middleware lives here (store/ speaks no HTTP): these two wrap store helpers.
class SettleBumpsMiddleware:
    """No response leaves before Redis has confirmed the request's bumps.

    So the browser's next request, on whatever worker, reads the new versions.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        settle_bumps()
        return response


class SlowQueryMiddleware:
    """Every request's queries go through the wrapper, so slow ones are logged."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        with querylog.instrumented():
            return self.get_response(request)
