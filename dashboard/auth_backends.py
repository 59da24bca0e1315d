"""Permission checks answered from the cache instead of two join queries a request.

Every logged-in request checks at least one permission (each view and each panel),
and Django's ``ModelBackend`` answers from two join queries per request (the user's
and their groups' permissions): 0.7 ms of PostgreSQL CPU per request measured on the
bench set, a third of the dashboard's database budget under load. A user's permission
set changes only through the auth models, whose signals bump the "access" namespace
(``store/signals.py``), so a key carrying that version never serves a set from before
a change. With the cache down the set is read from the database, as before.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth.backends import ModelBackend
from django.core.cache import cache

from store.caching import namespace_versions
from store.routing import use_primary

# Bounds how long a set outlives a bump lost in a cache outage (bumps sent while
# Redis is down are lost), and the memory of users who stopped coming.
PERMISSIONS_TTL = 60


def permissions_version(user: Any) -> int | None:
    """The "access" version this request's permission checks were answered under, or
    None when none was (a superuser, or no check yet). A panel keys its fragment on
    it: the buttons it shows follow the very set the request was checked against,
    and the version is not read from the cache a second time."""
    return getattr(user, "_perm_version", None)


class CachedPermissionsBackend(ModelBackend):
    def get_all_permissions(self, user_obj: Any, obj: Any = None) -> set[str]:
        if not user_obj.is_active or user_obj.is_anonymous or obj is not None:
            return set()
        if not hasattr(user_obj, "_perm_cache"):
            version = namespace_versions("access")["access"]
            key = f"permissions:{user_obj.pk}:{version}"
            found = cache.get(key)
            if found is None:
                # From the primary: a lagging replica could store a set from before
                # the change under the version that announced it.
                with use_primary():
                    found = super().get_all_permissions(user_obj)
                cache.set(key, found, PERMISSIONS_TTL)
            user_obj._perm_cache = set(found)
            user_obj._perm_version = version
        return user_obj._perm_cache
