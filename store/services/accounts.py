"""Console logins: the demo operator account."""

from __future__ import annotations

import secrets

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractUser, Group
from django.db import transaction

from store.permissions import ops_groups_sync


@transaction.atomic
def demo_user_ensure(*, username: str = "ops", password: str = "") -> tuple[AbstractUser, str]:
    """Create or reset the demo operator; returns the user and the password it now has.

    The operator is staff so the Admin link works, with the ops-operator group's
    permissions plus price changes, so every button of the console can be tried.
    """
    password = password or secrets.token_urlsafe(12)
    ops_groups_sync()
    user_model = get_user_model()
    user, _ = user_model.objects.get_or_create(username=username)
    user.is_staff = True
    user.set_password(password)
    user.save()
    user.groups.add(Group.objects.get(name="ops-operator"))
    return user, password
