"""HTTP for the views: the typed request, one way to answer HTMX or page, and the
two cache policies of views that answer both.

Every view that serves a partial and a page from one URL goes through
``render_partial_or_page`` (django-htmx's ``template_name += "#partial"``, the shape
of django-htmx-patterns' ``for_htmx``): the server picks the partial from the URL it
routed, never from a client parameter. Such a view's body depends on ``HX-Request``,
so it carries one of the two decorators below, never a hand-made stack.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils.cache import add_never_cache_headers, patch_cache_control, patch_vary_headers
from django_htmx.middleware import HtmxDetails

View = TypeVar("View", bound=Callable[..., Any])


class HtmxHttpRequest(HttpRequest):
    htmx: HtmxDetails


def wants_partial(request: HtmxHttpRequest) -> bool:
    """An HTMX request gets the partial alone; a history restore (htmx re-reading a
    page it has no snapshot of) must get a whole page, never a bare partial."""
    return bool(request.htmx) and not request.htmx.history_restore_request


def render_partial_or_page(
    request: HtmxHttpRequest,
    partial: str,
    context: dict[str, Any],
    *,
    page: str = "",
    status: int = 200,
) -> HttpResponse:
    """``partial`` ("template.html#name") alone for HTMX, else the whole page.

    The page is ``page``, or by default the partial's own template; it finds the
    partial to show in ``partial`` (``{% include partial %}``), so it never decides.
    """
    template = partial if wants_partial(request) else (page or partial.partition("#")[0])
    return render(request, template, {**context, "partial": partial}, status=status)


def _varies_on_htmx(response: HttpResponse) -> None:
    # A partial and a full page of one URL never share a browser cache entry.
    patch_vary_headers(response, ("Cookie", "HX-Request"))


def private_htmx(view: View) -> View:
    """Per-user reads whose body depends on HX-Request: no shared cache may keep
    them (``Cache-Control: private``)."""

    @functools.wraps(view)
    def wrapped(request: HtmxHttpRequest, *args: Any, **kwargs: Any) -> Any:
        response = view(request, *args, **kwargs)
        patch_cache_control(response, private=True)
        _varies_on_htmx(response)
        return response

    return wrapped  # type: ignore[return-value]


def never_cache_htmx(view: View) -> View:
    """Forms whose every render carries a fresh idempotency key: no cache may keep
    them at all, and their HTMX and full answers differ."""

    @functools.wraps(view)
    def wrapped(request: HtmxHttpRequest, *args: Any, **kwargs: Any) -> Any:
        response = view(request, *args, **kwargs)
        add_never_cache_headers(response)
        _varies_on_htmx(response)
        return response

    return wrapped  # type: ignore[return-value]
