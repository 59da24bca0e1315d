"""The login lockout page (django-axes calls it through ``AXES_LOCKOUT_CALLABLE``)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from axes.helpers import get_cool_off
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render


def wait_text(wait: timedelta) -> str:
    """ "1 minute", "90 seconds", "2 hours": the wait as a person says it."""
    seconds = int(wait.total_seconds())
    for unit, size in (("hour", 3600), ("minute", 60)):
        if seconds >= size and seconds % size == 0:
            count = seconds // size
            return f"{count} {unit}{'s' if count != 1 else ''}"
    return f"{seconds} second{'s' if seconds != 1 else ''}"


def login_locked_out(
    request: HttpRequest, original_response: HttpResponse | None, credentials: Any
) -> HttpResponse:
    """429 and a normal page naming the wait, for the password right or wrong: while
    locked, axes refuses the login before the password is checked."""
    wait = get_cool_off(request) or timedelta(0)
    response = render(
        request, "registration/locked_out.html", {"wait": wait_text(wait)}, status=429
    )
    response["Retry-After"] = str(int(wait.total_seconds()))
    return response
