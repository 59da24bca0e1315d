"""Permission checks come from the cache, and a change is seen by the next request."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group, Permission, User
from django.test import Client

from dashboard.panels import PANELS

pytestmark = pytest.mark.django_db

HX = {"HTTP_HX_REQUEST": "true"}


def test_a_warm_request_runs_no_permission_query(
    viewer: User, django_assert_max_num_queries
) -> None:
    client = Client()
    client.force_login(viewer)
    name = next(iter(PANELS))
    assert client.get(f"/panels/{name}/", **HX).status_code == 200  # fills the caches
    # The session and the user; ModelBackend would add its two permission joins.
    with django_assert_max_num_queries(2):
        assert client.get(f"/panels/{name}/", **HX).status_code == 200


def test_a_revoked_permission_is_refused_on_the_next_request(
    operator: User, django_capture_on_commit_callbacks
) -> None:
    client = Client()
    client.force_login(operator)
    url = "/products/1/adjust/"
    before = client.get(url)
    assert before.status_code != 403  # 404: no such product, but allowed to ask
    with django_capture_on_commit_callbacks(execute=True):  # the change commits
        operator.groups.clear()
    assert client.get(url).status_code == 403
    with django_capture_on_commit_callbacks(execute=True):
        operator.groups.add(Group.objects.get(name="ops-operator"))
    assert client.get(url).status_code != 403


def test_a_permission_given_to_a_group_reaches_its_members_at_once(
    viewer: User, django_capture_on_commit_callbacks
) -> None:
    assert not User.objects.get(pk=viewer.pk).has_perm("store.adjust_stock")
    group = Group.objects.get(name="ops-viewer")
    with django_capture_on_commit_callbacks(execute=True):
        group.permissions.add(Permission.objects.get(codename="adjust_stock"))
    assert User.objects.get(pk=viewer.pk).has_perm("store.adjust_stock")


def test_an_inactive_user_has_no_permission_even_when_cached(operator: User) -> None:
    assert User.objects.get(pk=operator.pk).has_perm("store.adjust_stock")
    User.objects.filter(pk=operator.pk).update(is_active=False)  # no signal: no bump
    assert not User.objects.get(pk=operator.pk).has_perm("store.adjust_stock")
