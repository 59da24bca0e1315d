"""Permission changes invalidate every cached per-user fragment.

Panels are cached as HTML per user, and that HTML shows or hides action buttons
by permission. Django's auth models are not ours to wrap in services (the admin
edits them directly), so their change signals bump the "access" namespace that
every fragment key includes. Permission changes are rare; dropping every user's
fragments once per change is cheaper than keying each fragment on its user's
permission set, which would cost the permission queries on every cache hit.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import Group, User
from django.db.models.signals import m2m_changed, post_delete, post_save

from store.caching import bump

# Saves that cannot change what a user may do (a login stamps last_login).
_HARMLESS_USER_FIELDS = frozenset({"last_login", "password"})


def _access_changed(sender: Any, **kwargs: Any) -> None:
    if kwargs.get("action", "post_").startswith("pre_"):
        return  # m2m_changed fires before and after; once is enough
    bump("access", using=kwargs.get("using") or "default")


def _user_saved(sender: Any, update_fields: frozenset[str] | None = None, **kwargs: Any) -> None:
    if update_fields is not None and set(update_fields) <= _HARMLESS_USER_FIELDS:
        return
    if kwargs.get("created"):
        return  # a new user has no fragments yet
    _access_changed(sender, **kwargs)


def connect() -> None:
    for through in (User.groups.through, User.user_permissions.through, Group.permissions.through):
        m2m_changed.connect(_access_changed, sender=through, dispatch_uid=f"access:{through}")
    post_save.connect(_user_saved, sender=User, dispatch_uid="access:user-saved")
    for model in (User, Group):
        post_delete.connect(_access_changed, sender=model, dispatch_uid=f"access:{model}-deleted")
