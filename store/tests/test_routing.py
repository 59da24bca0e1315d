"""Router decisions per model and hint, and the stable shard map."""

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.contrib.auth.models import User
from django.contrib.sessions.models import Session
from django.db import connections, transaction
from django.test import override_settings

from store import replicas, routing
from store.models import CustomerProfile, Order, Product, StockMovement
from store.routing import PrimaryReplicaRouter, ShardRouter, use_primary
from store.sharding import bucket_for_user, default_bucket_ranges, shard_for_user

# Names without servers: these tests read the router's decisions, not the databases.
REPLICAS = override_settings(REPLICA_ALIASES=["replica_x0", "replica_x1"])


@pytest.fixture(autouse=True)
def _fresh_request_replica():
    with routing.request_scope():  # each test is one request's worth of reads
        yield


@pytest.mark.parametrize("model", [Product, Order, StockMovement])
def test_primary_side_writes_go_to_default(model) -> None:
    assert PrimaryReplicaRouter().db_for_write(model) == "default"


def test_reads_stay_on_primary_without_replicas() -> None:
    assert PrimaryReplicaRouter().db_for_read(Product) == "default"


# No django_db mark: a test transaction is an open atomic block, which pins reads.
@REPLICAS
def test_reads_go_to_one_replica_per_request() -> None:
    router = PrimaryReplicaRouter()
    first = router.db_for_read(Product)
    assert first.startswith("replica_")
    assert {router.db_for_read(Order) for _ in range(5)} == {first}


@REPLICAS
@pytest.mark.parametrize("model", [User, Session])
def test_auth_and_sessions_always_read_the_primary(model) -> None:
    assert PrimaryReplicaRouter().db_for_read(model) == "default"


@REPLICAS
def test_use_primary_is_reentrant_and_decorates() -> None:
    router = PrimaryReplicaRouter()
    assert router.db_for_read(Product).startswith("replica_")
    with use_primary():
        with use_primary():
            assert router.db_for_read(Product) == "default"
        assert router.db_for_read(Product) == "default"

    @use_primary()
    def read() -> str:
        return router.db_for_read(Product)

    assert read() == "default"


def test_one_decorated_view_serves_concurrent_requests() -> None:
    """A view decorated once (``@decides()``) runs in many request threads at a time:
    each call forces the primary for itself. (One shared context manager kept the
    last caller's token, and the others' exits raised ValueError: 500s under load.)"""
    from store.routing import reads_must_use_primary

    inside = threading.Barrier(8)

    @use_primary()
    def view() -> bool:
        inside.wait(timeout=5)  # every thread has entered before any leaves
        return reads_must_use_primary()

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: view(), range(8)))
    assert results == [True] * 8
    assert not reads_must_use_primary()


@REPLICAS
@pytest.mark.django_db(transaction=True)
def test_reads_inside_atomic_on_default_use_the_primary() -> None:
    router = PrimaryReplicaRouter()
    with transaction.atomic():
        assert router.db_for_read(Product) == "default"


@REPLICAS
def test_pinned_request_reads_the_primary() -> None:
    token = routing.pinned_to_primary.set(True)
    try:
        assert PrimaryReplicaRouter().db_for_read(Product) == "default"
    finally:
        routing.pinned_to_primary.reset(token)


@pytest.mark.django_db  # the bucket map's overrides live on the primary
def test_sharded_models_route_by_user() -> None:
    profile = CustomerProfile(user_id=1234)
    assert ShardRouter().db_for_write(CustomerProfile, instance=profile) == shard_for_user(1234)
    assert ShardRouter().db_for_read(CustomerProfile, user_id=1234) == shard_for_user(1234)
    assert ShardRouter().db_for_read(Product) is None


def test_unhinted_sharded_access_is_an_error_not_a_guess() -> None:
    with pytest.raises(LookupError, match="lives on the shards"):
        ShardRouter().db_for_read(CustomerProfile)


@pytest.mark.parametrize(
    ("db", "model_name", "expected"),
    [
        ("default", "product", True),
        ("default", "customerprofile", False),
        ("shard_0", "customerprofile", True),
        ("shard_1", "customerevent", True),
        ("shard_0", "product", False),
        ("shard_0", None, False),
        ("replica_0", "product", False),
    ],
)
def test_allow_migrate(db: str, model_name: str | None, expected: bool) -> None:
    decisions = [
        r.allow_migrate(db, "store", model_name) for r in (ShardRouter(), PrimaryReplicaRouter())
    ]
    decision = next((d for d in decisions if d is not None), True)
    assert decision is expected


def test_auth_tables_never_migrate_to_shards() -> None:
    assert ShardRouter().allow_migrate("shard_0", "auth", "user") is False


@pytest.mark.django_db
def test_buckets_are_stable_and_cover_every_shard() -> None:
    assert bucket_for_user(42) == bucket_for_user(42)
    # A regression guard: changing the hash would strand every customer's data.
    assert [bucket_for_user(uid) for uid in (1, 2, 3, 1_000_000)] == [696, 501, 754, 723]
    ranges = default_bucket_ranges()
    assert sorted(b for r in ranges.values() for b in r) == list(range(1024))
    used = {shard_for_user(uid) for uid in range(1, 500)}
    assert used == set(ranges)


@pytest.mark.django_db(databases="__all__")
def test_for_user_reads_the_owning_shard() -> None:
    alias = shard_for_user(7)
    CustomerProfile.objects.using(alias).create(
        user_id=7,
        bucket=bucket_for_user(7),
        name="Ada",
        email="a@example.com",
        created_at="2026-01-01T00:00:00Z",
    )
    assert CustomerProfile.objects.for_user(7).get().name == "Ada"
    other = next(a for a in default_bucket_ranges() if a != alias)
    assert not CustomerProfile.objects.using(other).filter(user_id=7).exists()


@pytest.fixture
def dead_replica(settings) -> Iterator[str]:
    """A PostgreSQL replica alias whose server does not exist (port 1 refuses)."""
    alias = "replica_dead"
    conf = {**connections["default"].settings_dict, "PORT": 1, "TEST": {"MIRROR": "default"}}
    connections.settings[alias] = conf
    settings.REPLICA_ALIASES = [alias]
    replicas.replica_states_reset()
    yield alias
    replicas.replica_states_reset()
    del connections.settings[alias]


@pytest.mark.postgres
def test_a_dead_replica_is_skipped_quickly_and_reads_use_the_primary(dead_replica) -> None:
    started = time.monotonic()
    assert replicas.healthy_replicas() == []
    assert PrimaryReplicaRouter().db_for_read(Product) == "default"
    state = replicas.replica_state(dead_replica)
    assert not state.usable
    assert "unreachable" in state.reason
    assert time.monotonic() - started < 1.5, "one connect attempt, then the cached verdict"


@pytest.mark.postgres
@pytest.mark.django_db
def test_a_primary_configured_as_replica_is_not_used(settings) -> None:
    # The primary answers, but it is not in recovery: it must not count as a replica.
    alias = "replica_not_in_recovery"
    connections.settings[alias] = {**connections["default"].settings_dict}
    settings.REPLICA_ALIASES = [alias]
    replicas.replica_states_reset()
    try:
        assert replicas.replica_state(alias).reason == "not in recovery"
        assert replicas.healthy_replicas() == []
    finally:
        replicas.replica_states_reset()
        del connections.settings[alias]


def _models(*, sharded: bool) -> list[type]:
    from django.apps import apps

    from store.models import SHARDED_MODELS

    return [
        m
        for m in apps.get_models()
        if m._meta.managed and (m._meta.model_name in SHARDED_MODELS) == sharded
    ]


def _decide(model: type, method: str, **hints) -> str:
    routers = (ShardRouter(), PrimaryReplicaRouter())
    return next(d for r in routers if (d := getattr(r, method)(model, **hints)) is not None)


@REPLICAS
@pytest.mark.parametrize("model", _models(sharded=False), ids=lambda m: m._meta.label)
def test_every_primary_side_model_reads_a_replica_and_writes_the_primary(model) -> None:
    expected = "default" if model._meta.app_label in routing.PRIMARY_ONLY_APPS else "replica_"
    assert _decide(model, "db_for_read").startswith(expected)
    assert _decide(model, "db_for_write") == "default"
    with use_primary():
        assert _decide(model, "db_for_read") == "default"


@pytest.mark.django_db
@pytest.mark.parametrize("model", _models(sharded=True), ids=lambda m: m._meta.label)
def test_every_sharded_model_follows_the_user(model) -> None:
    for uid in (1, 2, 3, 1_000_000):
        assert _decide(model, "db_for_read", user_id=uid) == shard_for_user(uid)
        assert _decide(model, "db_for_write", instance=model(user_id=uid)) == shard_for_user(uid)


@REPLICAS
def test_outside_a_request_every_read_chooses_again() -> None:
    token = routing.request_replica.set(None)  # a command or shell, not a request
    try:
        router = PrimaryReplicaRouter()
        assert {router.db_for_read(Product) for _ in range(4)} == {"replica_x0", "replica_x1"}
        assert routing.request_replica.get() is None
    finally:
        routing.request_replica.reset(token)
