"""Permission checks whose refusal names what is missing.

Django's ``permission_required(raise_exception=True)`` raises a bare
``PermissionDenied``; the 403 page (dashboard/views/errors.py) can then only say
"not allowed". This one puts the permission in the exception, so the operator
knows what to ask an administrator for.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from django.contrib.auth.models import Permission
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest
from django.http.response import HttpResponseBase

MISSING = 'This needs the permission "{name}" ({perm}); ask an administrator to grant it.'


def missing_permission_message(perm: str) -> str:
    app_label, _, codename = perm.partition(".")
    # One query, on the refusal path only.
    name = (
        Permission.objects.filter(content_type__app_label=app_label, codename=codename)
        .values_list("name", flat=True)
        .first()
    )
    return MISSING.format(name=name or codename, perm=perm)


# HttpResponseBase: the table views also answer with streamed exports.
def permission_required(perm: str) -> Callable[[Callable[..., HttpResponseBase]], Any]:
    def decorator(view: Callable[..., HttpResponseBase]) -> Callable[..., HttpResponseBase]:
        @wraps(view)
        def checked(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
            if not request.user.has_perm(perm):
                raise PermissionDenied(missing_permission_message(perm))
            return view(request, *args, **kwargs)

        return checked

    return decorator
