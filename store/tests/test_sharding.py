"""The bucket map, cross-shard reads with partial results, and online bucket moves."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from io import StringIO
from pathlib import Path

import pytest
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.db import connections
from django.utils import timezone

from store.exceptions import BucketMoving
from store.models import CustomerEvent, CustomerProfile, ShardMove
from store.selectors.customers import (
    customer_events_last_hour,
    customer_profile,
    top_customers_by_lifetime_value,
)
from store.services.shards import COLUMNS, bucket_digest, shards_move
from store.sharding import (
    bucket_for_user,
    bucket_ranges,
    check_shard_map,
    shard_for_user,
    shard_map_reset,
)

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")


@pytest.fixture(autouse=True)
def _fresh_map(settings) -> Iterator[None]:
    settings.STOREOPS_SHARD_MAP_SECONDS = 0  # no waiting for other processes in tests
    shard_map_reset()
    yield
    shard_map_reset()


@contextmanager
def shard_down(alias: str) -> Iterator[None]:
    """Point the alias at a server/file that does not exist: a real connection failure."""
    conf = connections[alias].settings_dict
    saved = dict(conf)
    postgres = connections[alias].vendor == "postgresql"
    if postgres:
        conf["PORT"] = 1
        connections[alias].close()
    else:
        # New connections (each worker thread opens one) fail; this thread's stays open,
        # since closing the last one would drop the shared in-memory test database.
        conf["NAME"] = "/nonexistent/storeops/shard.sqlite3"
    try:
        yield
    finally:
        conf.update(saved)
        if postgres:
            connections[alias].close()


def make_customer(user_id: int, *, value: int = 0, events: int = 1) -> str:
    alias = shard_for_user(user_id)
    bucket = bucket_for_user(user_id)
    now = timezone.now()
    CustomerProfile.objects.using(alias).create(
        user_id=user_id,
        bucket=bucket,
        name=f"Customer {user_id}",
        email=f"c{user_id}@example.com",
        lifetime_value=value,
        created_at=now - timedelta(days=30),
    )
    CustomerEvent.objects.using(alias).bulk_create(
        CustomerEvent(
            user_id=user_id,
            bucket=bucket,
            kind="view" if n % 2 else "order",
            product_id=n,
            payload={"n": n},
            created_at=now - timedelta(minutes=10 * n),
        )
        for n in range(events)
    )
    return alias


def test_the_default_map_is_two_contiguous_halves() -> None:
    assert bucket_ranges() == {"shard_0": [(0, 511)], "shard_1": [(512, 1023)]}


def test_top_customers_merge_every_shard() -> None:
    for uid in range(1, 21):
        make_customer(uid, value=uid * 100)
    top = top_customers_by_lifetime_value(limit=5)
    assert not top.partial
    assert [c.user_id for c in top.value] == [20, 19, 18, 17, 16]
    assert {c.shard for c in top.value} <= {"shard_0", "shard_1"}
    assert all(c.shard == shard_for_user(c.user_id) for c in top.value)


def test_events_in_the_last_hour_are_summed_over_shards() -> None:
    for uid in range(1, 11):
        make_customer(uid, events=8)  # minutes 0..70: 6 of 8 within the hour
    events = customer_events_last_hour()
    assert not events.partial
    assert events.value == {"order": 30, "view": 30}


def test_a_shard_down_gives_partial_results_and_other_customers_still_work() -> None:
    homes = {uid: make_customer(uid, value=uid) for uid in range(1, 21)}
    with shard_down("shard_1"):
        top = top_customers_by_lifetime_value(limit=50)
        assert top.partial
        assert set(top.failed) == {"shard_1"}
        assert {c.user_id for c in top.value} == {u for u, a in homes.items() if a == "shard_0"}
        assert customer_events_last_hour().partial
        healthy_user = next(u for u, a in homes.items() if a == "shard_0")
        assert customer_profile(user_id=healthy_user).name == f"Customer {healthy_user}"
    assert not top_customers_by_lifetime_value().partial


@pytest.mark.postgres
def test_a_shard_that_hangs_is_cut_off_at_the_deadline() -> None:
    for uid in range(1, 11):
        make_customer(uid, value=uid)
    # A DDL-style lock on shard_1 makes its query wait; the deadline must not.
    release = threading.Event()
    locked = threading.Event()

    def hold_lock() -> None:
        blocker = connections["shard_1"]  # this thread's own connection
        try:
            with blocker.cursor() as cursor:
                cursor.execute("BEGIN")
                cursor.execute("LOCK TABLE store_customerprofile IN ACCESS EXCLUSIVE MODE")
                locked.set()
                release.wait(10)
                cursor.execute("ROLLBACK")
        finally:
            blocker.close()

    thread = threading.Thread(target=hold_lock)
    thread.start()
    try:
        assert locked.wait(5)
        from store.sharding import scatter_gather

        gathered = scatter_gather(
            lambda alias: CustomerProfile.objects.using(alias).count(), timeout=0.5
        )
        assert set(gathered.failed) == {"shard_1"}
        assert "shard_0" in gathered.results
    finally:
        release.set()
        thread.join(10)


def _shard_sessions(**kwargs: float) -> dict[str, tuple[int, str]]:
    """Each shard's server process and statement timeout, as a scatter-gather sees them."""
    from store.sharding import scatter_gather

    def session(alias: str) -> tuple[int, str]:
        with connections[alias].cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid(), current_setting('statement_timeout')")
            return cursor.fetchone()

    gathered = scatter_gather(session, **kwargs)
    assert not gathered.failed
    return gathered.results


@pytest.mark.postgres
def test_a_scatter_gather_reuses_the_shard_connections_the_previous_one_finished_with() -> None:
    first = _shard_sessions()
    assert _shard_sessions() == first  # the same server processes, no new connection


@pytest.mark.postgres
def test_a_shard_connection_is_not_reused_after_an_error_a_changed_timeout_or_an_outage() -> None:
    from store import deadlines
    from store.sharding import scatter_gather

    def fails(alias: str) -> None:
        with connections[alias].cursor() as cursor:
            cursor.execute("SELECT 1 / 0")

    before = _shard_sessions()
    assert set(scatter_gather(fails).failed) == set(settings.SHARD_ALIASES)
    after_error = _shard_sessions()
    assert not {pid for pid, _ in after_error.values()} & {pid for pid, _ in before.values()}

    # Another budget changes the session's statement timeout: that session is closed,
    # and the next call runs under the shard's own timeout again.
    other = _shard_sessions(timeout=0.7)
    assert {timeout for _, timeout in other.values()} == {"700ms"}
    assert all(pair[1] == before["shard_0"][1] for pair in _shard_sessions().values())

    # Marked down and answering again: what was open before is never reused.
    kept = _shard_sessions()
    deadlines.trip("shard_1", "no answer within 1 s (test)")
    deadlines.reset("shard_1")
    after_outage = _shard_sessions()
    assert after_outage["shard_0"] == kept["shard_0"]
    assert after_outage["shard_1"][0] != kept["shard_1"][0]


def _seed_for_move() -> tuple[int, int, list[int]]:
    """Customers on shard_0, and a bucket range holding at least four of them."""
    users = [uid for uid in range(1, 400) if shard_for_user(uid) == "shard_0"][:40]
    for uid in users:
        make_customer(uid, value=uid, events=3)
    buckets = sorted({bucket_for_user(uid) for uid in users})
    first, last = buckets[0], buckets[5]
    moving = [u for u in users if first <= bucket_for_user(u) <= last]
    return first, last, moving


def _digests(alias: str, first: int, last: int) -> dict:
    return {
        (model.__name__, b): bucket_digest(alias=alias, model=model, bucket=b)
        for model in COLUMNS
        for b in range(first, last + 1)
    }


def _totals() -> tuple[int, int]:
    return (
        sum(CustomerProfile.objects.using(a).count() for a in settings.SHARD_ALIASES),
        sum(CustomerEvent.objects.using(a).count() for a in settings.SHARD_ALIASES),
    )


def test_a_bucket_move_keeps_every_row_and_checksum() -> None:
    first, last, moving = _seed_for_move()
    before = _digests("shard_0", first, last)
    totals = _totals()

    move = shards_move(first=first, last=last, target="shard_1")

    assert move.state == ShardMove.State.DONE
    assert _digests("shard_1", first, last) == before
    assert _totals() == totals
    assert not CustomerProfile.objects.using("shard_0").filter(bucket__range=(first, last))
    for uid in moving:
        assert shard_for_user(uid) == "shard_1"
        assert customer_profile(user_id=uid).lifetime_value == uid
    assert (first, last) in bucket_ranges()["shard_1"]


def test_an_interrupted_move_finishes_when_run_again() -> None:
    first, last, moving = _seed_for_move()
    before = _digests("shard_0", first, last)
    totals = _totals()

    move = shards_move(first=first, last=last, target="shard_1", max_buckets=1)
    assert move.state == ShardMove.State.COPYING
    assert len(move.verified) == 1
    # Mid-move the buckets are frozen: reads work, writes are refused.
    frozen_user = moving[-1]
    assert customer_profile(user_id=frozen_user) is not None
    profile = CustomerProfile.objects.for_user(frozen_user).get()
    profile.name = "changed"
    with pytest.raises(BucketMoving):
        profile.save()
    # A crash in the middle of copying a bucket leaves a half copy on the target.
    half = CustomerProfile.objects.using("shard_0").filter(bucket=bucket_for_user(frozen_user))
    CustomerProfile.objects.using("shard_1").bulk_create(
        [CustomerProfile(**{c: getattr(p, c) for c in COLUMNS[CustomerProfile]}) for p in half]
    )

    move = shards_move(first=first, last=last, target="shard_1")

    assert move.state == ShardMove.State.DONE
    assert _digests("shard_1", first, last) == before
    assert _totals() == totals
    # Safe to re-run once finished: nothing changes.
    shards_move(first=first, last=last, target="shard_1")
    assert _digests("shard_1", first, last) == before
    assert _totals() == totals
    profile = CustomerProfile.objects.for_user(frozen_user).get()
    profile.name = "changed"
    profile.save()  # unfrozen, and written where the map now says
    assert CustomerProfile.objects.using("shard_1").get(user_id=frozen_user).name == "changed"


def test_the_command_shows_the_map_and_moves() -> None:
    make_customer(1)
    out = StringIO()
    call_command("shards", stdout=out)
    assert "shard_0: 512 buckets (0-511)" in out.getvalue()
    assert "shard_1: 512 buckets (512-1023)" in out.getvalue()
    out = StringIO()
    call_command("shards", "move", "--buckets", "0-3", "--to", "shard_1", stdout=out)
    assert "shard_1: 516 buckets (0-3, 512-1023)" in out.getvalue()
    assert "shard_0: 508 buckets (4-511)" in out.getvalue()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--buckets", "5-2", "--to", "shard_1"], "bucket range"),
        (["--buckets", "0-3", "--to", "shard_9"], "unknown shard"),
        (["--buckets", "abc", "--to", "shard_1"], "--buckets must look like"),
    ],
)
def test_the_command_refuses_bad_arguments(args: list[str], message: str) -> None:
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match=message):
        call_command("shards", "move", *args, stdout=StringIO())


# PostgreSQL only: the move runs in this thread, whose SQLite in-memory shard connection
# cannot be broken without destroying the test database.
@pytest.mark.postgres
def test_a_move_that_loses_its_target_stops_cleanly_and_resumes() -> None:
    from django.core.management.base import CommandError

    first, last, _ = _seed_for_move()
    before = _digests("shard_0", first, last)
    args = ["move", "--buckets", f"{first}-{last}", "--to", "shard_1"]
    with shard_down("shard_1"), pytest.raises(CommandError, match="Run the same command again"):
        call_command("shards", *args, stdout=StringIO())
    call_command("shards", *args, stdout=StringIO())
    assert _digests("shard_1", first, last) == before
    assert ShardMove.objects.get().state == ShardMove.State.DONE


@contextmanager
def shard_statements() -> Iterator[list[tuple[str, str]]]:
    """(alias, sql) of every customer-table statement, from whichever thread ran it."""
    from django.db.backends.signals import connection_created

    from store.sharding import parked_connections_close

    parked_connections_close()  # every shard thread opens a connection, seen here

    seen: list[tuple[str, str]] = []

    def attach(sender, connection, **kwargs) -> None:
        def record(execute, sql, params, many, context):
            if "store_customer" in sql:
                seen.append((connection.alias, sql))
            return execute(sql, params, many, context)

        connection.execute_wrappers.append(record)

    connection_created.connect(attach)
    try:
        yield seen
    finally:
        connection_created.disconnect(attach)


@pytest.mark.parametrize("customers", [10, 60])
def test_cross_shard_reads_cost_one_query_per_shard_whatever_the_size(customers: int) -> None:
    for uid in range(1, customers + 1):
        make_customer(uid, value=uid, events=2)
    for selector in (top_customers_by_lifetime_value, customer_events_last_hour):
        with shard_statements() as seen:
            assert not selector().partial
        assert sorted(alias for alias, _ in seen) == ["shard_0", "shard_1"], seen


# --- the stored map is the source of truth ------------------------------------


def _allow_in_this_test(alias: str) -> None:
    """Django lets a test open only the connections it declared (its ``databases``),
    fixed before this alias existed: add it to the running test case's list."""
    from django.db.backends.base.base import BaseDatabaseWrapper

    for cell in BaseDatabaseWrapper.ensure_connection.__closure__ or ():
        case = cell.cell_contents
        if isinstance(case, type) and hasattr(case, "databases"):
            case.databases = frozenset(case.databases) | {alias}


@pytest.fixture
def third_shard(settings) -> Iterator[Callable[[], str]]:
    """Configure a third shard (a real, migrated, empty database) when called."""
    added: list[str] = []

    def add() -> str:
        alias = "shard_2"
        conf = dict(connections["shard_1"].settings_dict)
        postgres = connections["shard_1"].vendor == "postgresql"
        conf["NAME"] = conf["NAME"].replace("shard_1", "shard_2")
        if postgres:
            with connections["default"].cursor() as cursor:
                cursor.execute(f'DROP DATABASE IF EXISTS "{conf["NAME"]}"')
                cursor.execute(f'CREATE DATABASE "{conf["NAME"]}"')
        else:
            Path(conf["NAME"]).unlink(missing_ok=True)
        connections.settings[alias] = conf
        settings.DATABASES[alias] = conf
        settings.SHARD_ALIASES = [*settings.SHARD_ALIASES, alias]
        _allow_in_this_test(alias)
        call_command("migrate", database=alias, verbosity=0, interactive=False)
        added.append(alias)
        return alias

    yield add
    for alias in added:
        name = connections[alias].settings_dict["NAME"]
        postgres = connections[alias].vendor == "postgresql"
        connections[alias].close()
        del connections[alias]
        connections.settings.pop(alias, None)
        settings.DATABASES.pop(alias, None)
        if postgres:
            with connections["default"].cursor() as cursor:
                cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        else:
            Path(name).unlink(missing_ok=True)


def _unconfigure(settings, alias: str) -> None:
    settings.SHARD_ALIASES = [a for a in settings.SHARD_ALIASES if a != alias]
    shard_map_reset()


def test_configuring_a_third_shard_moves_no_customer(settings, third_shard) -> None:
    make_customer(7, value=70)
    settings.STOREOPS_SHARD_MAP_SECONDS = 60  # one map per comparison, not one per user
    before = {uid: shard_for_user(uid) for uid in range(1, 2000)}
    third_shard()
    check_shard_map()  # the stored map is served as it is (and re-read)
    assert {uid: shard_for_user(uid) for uid in range(1, 2000)} == before
    profile = customer_profile(user_id=7)
    assert profile is not None
    assert profile.lifetime_value == 70
    out = StringIO()
    call_command("shards", stdout=out)
    assert "shard_2: 0 buckets (none)" in out.getvalue()
    assert "shard_0: 512 buckets (0-511)" in out.getvalue()


def test_buckets_move_to_a_third_shard_only_through_shards_move(third_shard) -> None:
    first, last, moving = _seed_for_move()
    before = _digests("shard_0", first, last)
    third_shard()
    out = StringIO()
    call_command("shards", "move", "--buckets", f"{first}-{last}", "--to", "shard_2", stdout=out)
    profiles = CustomerProfile.objects.using("shard_2").count()
    assert profiles == len(moving)
    assert f"shard_2: {last - first + 1} buckets ({first}-{last}); {profiles} profiles" in (
        out.getvalue()
    )
    assert _digests("shard_2", first, last) == before
    for uid in moving:
        assert shard_for_user(uid) == "shard_2"
        profile = customer_profile(user_id=uid)
        assert profile is not None
        assert profile.lifetime_value == uid


def test_removing_a_shard_that_owns_buckets_is_refused(settings, third_shard) -> None:
    make_customer(1)
    third_shard()
    shards_move(first=0, last=3, target="shard_2")
    _unconfigure(settings, "shard_2")
    with pytest.raises(ImproperlyConfigured) as refused:
        check_shard_map()
    message = str(refused.value)
    assert "shard_2" in message
    assert "0-3" in message
    assert "shards move --buckets 0-3 --to shard_" in message
    # Never a silent re-route: a customer of those buckets is refused too.
    uid = next(u for u in range(1, 5000) if bucket_for_user(u) <= 3)
    with pytest.raises(ImproperlyConfigured):
        shard_for_user(uid)
    # Moved back, the shard owns nothing and can go.
    settings.SHARD_ALIASES = [*settings.SHARD_ALIASES, "shard_2"]
    shard_map_reset()
    shards_move(first=0, last=3, target="shard_0")
    _unconfigure(settings, "shard_2")
    check_shard_map()
    assert shard_for_user(uid) == "shard_0"


def test_start_up_and_manage_py_check_refuse_a_shard_list_missing_an_owner(
    settings, third_shard
) -> None:
    """The process refuses to start (config/wsgi.py) and ``check --database default``
    reports it, naming the buckets and the command that fixes it."""
    import runpy

    from django.core.management.base import SystemCheckError

    third_shard()
    shards_move(first=0, last=3, target="shard_2")
    _unconfigure(settings, "shard_2")
    with pytest.raises(ImproperlyConfigured, match=r"buckets 0-3 on shard_2.*shards move"):
        runpy.run_module("config.wsgi")  # what gunicorn and runserver load
    with pytest.raises(SystemCheckError, match=r"store\.E001.*buckets 0-3 on shard_2"):
        call_command("check", databases=["default"])
    # With the shard configured again, both start.
    settings.SHARD_ALIASES = [*settings.SHARD_ALIASES, "shard_2"]
    shard_map_reset()
    runpy.run_module("config.wsgi")
    call_command("check", databases=["default"])
