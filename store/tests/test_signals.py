"""Which auth changes bump the "access" namespace (and so drop per-user fragments)."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group, Permission, User, update_last_login

from store import caching

pytestmark = pytest.mark.django_db


def _access_after(change, capture) -> int:
    before = caching.namespace_versions("access")["access"]
    with capture(execute=True):
        change()
    return caching.namespace_versions("access")["access"] - before


def test_group_and_permission_changes_bump_access_once_each(
    operator: User, django_capture_on_commit_callbacks
) -> None:
    viewer = Group.objects.get(name="ops-viewer")
    perm = Permission.objects.get(codename="adjust_stock")
    capture = django_capture_on_commit_callbacks
    assert _access_after(lambda: operator.groups.remove(viewer), capture) == 1
    assert _access_after(lambda: operator.user_permissions.add(perm), capture) == 1
    assert _access_after(lambda: viewer.permissions.remove(perm), capture) == 1
    operator.is_superuser = True
    assert _access_after(operator.save, capture) == 1
    assert _access_after(operator.delete, capture) == 1


def test_a_login_a_password_or_a_new_user_keeps_every_fragment(
    operator: User, django_capture_on_commit_callbacks
) -> None:
    capture = django_capture_on_commit_callbacks
    assert _access_after(lambda: update_last_login(None, operator), capture) == 0
    operator.set_password("another secret")
    assert _access_after(lambda: operator.save(update_fields=["password"]), capture) == 0
    assert _access_after(lambda: User.objects.create_user("newcomer"), capture) == 0
