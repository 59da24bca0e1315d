"""Template context every page needs: the user's role label for the header."""

from __future__ import annotations

from django.http import HttpRequest


def console(request: HttpRequest) -> dict[str, str]:
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {"console_role": ""}
    if user.is_superuser:
        role = "superuser"
    elif user.has_perm("store.adjust_stock"):
        role = "operator"
    elif user.has_perm("store.view_dashboard"):
        role = "viewer"
    else:
        role = "no console access"
    return {"console_role": role}
