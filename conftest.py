"""Project-wide test set-up: personas, and markers for real services.

``postgres`` / ``redis`` tests run when the suite is pointed at those services
(``DATABASE_URL`` / ``REDIS_URL``) and are skipped on the embedded SQLite run.
A service that is configured but unreachable, or a browser that is missing under
``CI=true``, is a failure, never a silent skip.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import pytest
from django.conf import settings
from django.contrib.auth.models import Group, Permission, User
from django.core.cache import cache
from django.db import connection
from django.test import Client

from store import refresh as background
from store.caching import settle_bumps
from store.permissions import ops_groups_sync

CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
PASSWORD = "correct-horse-battery-staple"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    is_postgres = connection.vendor == "postgresql"
    has_redis = bool(settings.REDIS_URL)
    has_replica = is_postgres and bool(settings.REPLICA_ALIASES)  # scripts/pg_replica.py
    for item in items:
        if "postgres" in item.keywords and not is_postgres:
            item.add_marker(pytest.mark.skip(reason="PostgreSQL run only (set DATABASE_URL)"))
        if "redis" in item.keywords and not has_redis:
            item.add_marker(pytest.mark.skip(reason="Redis run only (set REDIS_URL)"))
        # Under CI=true the PostgreSQL run has a replica (.ci/run starts one): without
        # it these tests fail (their fixture says why) instead of skipping.
        if "replica" in item.keywords and not (has_replica or (is_postgres and CI)):
            item.add_marker(
                pytest.mark.skip(reason="needs a streaming replica (DATABASE_REPLICA_URLS)")
            )


def pytest_sessionstart(session: pytest.Session) -> None:
    if settings.REDIS_URL:
        import redis

        try:
            redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=2).ping()
        except redis.RedisError as exc:
            pytest.exit(f"REDIS_URL is set but Redis does not answer: {exc}", returncode=3)


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup: None) -> Iterator[None]:
    """pytest-django's set-up, then every connection closed: one opened before the
    replicas were pointed at the test database (a start-up check, a probe) would
    otherwise keep reading the real one."""
    from django.db import connections

    connections.close_all()
    yield
    background.shutdown()  # its threads keep connections to the test databases


@pytest.fixture(autouse=True)
def _isolated_cache() -> Iterator[None]:
    """Fragments and namespace versions must not leak between tests.

    Local memory hides such leaks (it is cleared with the process); Redis keeps
    everything between tests, so every test starts and ends with an empty cache.
    """
    background.drain()  # a background refresh must not write into the next test
    settle_bumps()  # nor a batched bump (store/bump_batch.py)
    cache.clear()
    yield
    background.drain()
    settle_bumps()
    cache.clear()


@pytest.fixture
def make_user(db: None) -> Callable[..., User]:
    def make(
        username: str,
        *,
        groups: tuple[str, ...] = (),
        perms: tuple[str, ...] = (),
        superuser: bool = False,
    ) -> User:
        if superuser:
            return User.objects.create_superuser(username, f"{username}@example.com", PASSWORD)
        user = User.objects.create_user(username, f"{username}@example.com", PASSWORD)
        if groups:
            ops_groups_sync()  # a transactional test's flush drops migration-made groups
        for name in groups:
            user.groups.add(Group.objects.get(name=name))
        for perm in perms:
            app_label, codename = perm.split(".")
            user.user_permissions.add(
                Permission.objects.get(content_type__app_label=app_label, codename=codename)
            )
        return user

    return make


@pytest.fixture
def viewer(make_user: Callable[..., User]) -> User:
    return make_user("viewer", groups=("ops-viewer",))


@pytest.fixture
def operator(make_user: Callable[..., User]) -> User:
    return make_user("operator", groups=("ops-operator",))


@pytest.fixture
def outsider(make_user: Callable[..., User]) -> User:
    """Logged in, but with no console permission at all."""
    return make_user("outsider")


@pytest.fixture
def superuser(make_user: Callable[..., User]) -> User:
    return make_user("root", superuser=True)


def _client_for(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def viewer_client(viewer: User) -> Client:
    return _client_for(viewer)


@pytest.fixture
def operator_client(operator: User) -> Client:
    return _client_for(operator)


@pytest.fixture
def outsider_client(outsider: User) -> Client:
    return _client_for(outsider)


@pytest.fixture
def superuser_client(superuser: User) -> Client:
    return _client_for(superuser)
