"""Every middleware of the console (store/ speaks no HTTP).

``PrimaryStickinessMiddleware`` carries the read-your-writes pin: a request that used
an unsafe method and committed a write on ``default`` gets a signed cookie (never
the session, whose reads must not depend on a replica) holding the primary's WAL
position after the write, whatever the status code (HTMX POSTs answer 200). The
protocol itself, what a pin means for a request's reads and when it may end, is
``store.routing.read_your_writes``; the cookie lives at most ``pin_seconds()``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from datetime import timedelta

from django.conf import settings
from django.core.exceptions import BadRequest, SuspiciousOperation
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest
from django.http.multipartparser import MultiPartParserError

from store import querylog, routing
from store.caching import settle_bumps

logger = logging.getLogger(__name__)

COOKIE = "storeops_primary"
SALT = "storeops.stickiness"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})


class PrimaryStickinessMiddleware:
    sync_capable = True
    async_capable = False

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        with routing.read_your_writes(self._read_pin(request)) as writes:
            response = self.get_response(request)
        if writes.committed and request.method not in SAFE_METHODS:
            self._pin(response)
        elif writes.pin_ended:
            response.delete_cookie(COOKIE, samesite="Lax")  # every replica caught up
        return response

    @staticmethod
    def _read_pin(request: HttpRequest) -> str | None:
        """The LSN written by the client's last write ("" off PostgreSQL), or None.

        An expired or tampered cookie reads as no pin.
        """
        value = request.get_signed_cookie(
            COOKIE, default=None, salt=SALT, max_age=timedelta(seconds=routing.pin_seconds())
        )
        if not isinstance(value, str) or (value and "/" not in value):
            return None
        return value

    @staticmethod
    def _pin(response: HttpResponse) -> None:
        response.set_signed_cookie(
            COOKIE,
            routing.primary_lsn(),
            salt=SALT,
            max_age=math.ceil(routing.pin_seconds()),
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
