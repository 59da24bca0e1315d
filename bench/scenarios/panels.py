"""Dashboard panels on 1,000,000 products / ~2,000,000 order items (issue 3).

Per panel, with its default parameters:

- cold: the panel's selector through the ORM (what a cache miss runs) against the
  very same SQL and parameters run raw through psycopg (a ClientCursor, as Django
  binds client-side), interleaved; target ORM / raw <= 1.2;
- warm: the panel's HTMX request served from its fragment cache (Redis) against a
  bare Django view behind the same middleware (login, session, CSRF, HTMX, ...)
  that makes the same permission check and returns "ok", both through the test
  client as an ops-operator, interleaved; target <= 1.5;
- queries per request, warm and cold.

The SQL for the raw side is what the ORM sent, recorded by the query inspector's
execute wrapper (panel comment included), so both sides run identical statements.
"""

from __future__ import annotations

import time
from typing import Any

import psycopg

from bench import harness

BASE = "storeops_bench_panels"
HOST = {"HTTP_HOST": "127.0.0.1"}
HX = {"HTTP_HX_REQUEST": "true", **HOST}
# The analytics panels of issue 3: their cold path is SQL over the big tables. The
# outbox and shard-health panels (other issues) are measured warm only: shard
# health probes every database from threads, so "the same SQL raw" is not defined.
ANALYTICS = ("category-stats", "category-groups", "rank-window", "low-stock", "trending")
ANALYTICS += ("shop-activity",)
# Issue 12's panels that query the database (its done-when asks for their cold time
# and query count here). ops-series reads the probes' samples from the cache and
# sends no SQL, so it has no raw side: warm time and query count only.
ANALYTICS += ("headline", "sales-series", "stock-series")


def _bare(request: Any) -> Any:
    """Same middleware and the same permission check as a panel, then nothing."""
    from django.http import HttpResponse

    if not request.user.has_perm("store.view_dashboard"):
        raise PermissionError("the bench user must see the dashboard")
    return HttpResponse("ok")


# The project's URLs plus one bare view: the warm baseline.
urlpatterns: list[Any] = []


def _urls() -> None:
    from django.urls import path

    from config.urls import urlpatterns as project

    urlpatterns[:] = [*project, path("bench/bare/", _bare)]


def _client() -> Any:
    """An ops-operator, the persona who keeps the dashboard open (Adjust buttons shown)."""
    from django.contrib.auth.models import Group, User
    from django.test import Client

    from store.permissions import ops_groups_sync

    ops_groups_sync()
    user, _ = User.objects.get_or_create(username="bench-panels")
    user.groups.add(Group.objects.get(name="ops-operator"))
    client = Client()
    client.force_login(user)
    return client


def _get(client: Any, url: str, headers: dict[str, str]) -> Any:
    response = client.get(url, **headers)
    if response.status_code != 200:
        raise RuntimeError(f"{url} answered {response.status_code}")
    return response


def _is_read(sql: str) -> bool:
    statement = sql.split("*/", 1)[-1] if sql.lstrip().startswith("/*") else sql
    return statement.lstrip().upper().startswith(("SELECT", "WITH"))


def _cold(run: harness.Run, panel: Any, params: dict[str, Any], raw: Any, reps: int) -> None:
    """The selector through the ORM vs the statements it sent, raw, interleaved."""
    from store import querylog

    name = panel.name

    def orm(panel=panel, params=params) -> querylog.QueryLog:
        with querylog.capture(panel.name) as log:
            panel.compute(params)
        return log

    # Reads only: trending's compute first slides its rolling windows (INSERT ... ON
    # CONFLICT), which replayed raw would slide them again, not read them.
    statements = [(q.sql, q.params) for q in orm().queries if _is_read(q.sql)]

    def raw_sql(statements=statements) -> None:
        with raw.cursor() as cursor:
            for sql, args in statements:
                cursor.execute(sql, args)
                cursor.fetchall()

    raw_sql()  # warm the plan and buffers the same way
    cold_orm, cold_raw = [], []
    for _ in range(reps):
        for fn, samples in ((orm, cold_orm), (raw_sql, cold_raw)):
            started = time.perf_counter()
            fn()
            samples.append((time.perf_counter() - started) * 1000)
    run.record(f"{name}: cold ORM selector", cold_orm, unit="ms")
    run.record(f"{name}: cold same SQL raw psycopg", cold_raw, unit="ms")
    run.ratio(
        f"{name}: cold ORM / raw SQL",
        f"{name}: cold ORM selector",
        f"{name}: cold same SQL raw psycopg",
        at_most=1.2,
    )


def run(run: harness.Run, *, reps: int | None) -> None:
    reps = reps or 5
    with harness.cloned(BASE) as env:
        harness.setup_django(env | {"REDIS_URL": harness.REDIS})
        from django.core.cache import cache
        from django.db import connection
        from django.test.utils import CaptureQueriesContext, override_settings

        from dashboard.panels import PANELS
        from store.models import OrderItem, Product

        _urls()
        cache.clear()
        run.note(
            f"{Product.objects.count():,} products, {OrderItem.objects.count():,} order items; "
            f"PostgreSQL {connection.pg_version}; cache {harness.REDIS}; {reps} interleaved reps"
        )
        raw = psycopg.connect(
            env["DATABASE_URL"], autocommit=True, cursor_factory=psycopg.ClientCursor
        )
        with override_settings(ROOT_URLCONF=__name__):
            client = _client()
            _get(client, "/bench/bare/", HOST)
            for name, panel in PANELS.items():
                params, _ = panel.form().params()
                if name in ANALYTICS:
                    _cold(run, panel, params, raw, reps)
                url = f"/panels/{name}/"
                cache.clear()
                with CaptureQueriesContext(connection) as cold_q:
                    _get(client, url, HX)
                with CaptureQueriesContext(connection) as warm_q:
                    body = _get(client, url, HX).content
                if b'data-cache="fragment hit"' not in body:
                    raise RuntimeError(f"{name}: second request was not a fragment hit")
                run.record(f"{name}: queries per request, cold", len(cold_q), unit="q")
                run.record(f"{name}: queries per request, warm", len(warm_q), unit="q")
                warm, bare = [], []
                for _ in range(reps * 20):
                    for target, headers, samples in ((url, HX, warm), ("/bench/bare/", HOST, bare)):
                        started = time.perf_counter()
                        _get(client, target, headers)
                        samples.append((time.perf_counter() - started) * 1000)
                run.record(f"{name}: warm cached panel request", warm, unit="ms")
                run.record(f"{name}: bare view, same middleware", bare, unit="ms")
                run.ratio(
                    f"{name}: warm panel / bare view",
                    f"{name}: warm cached panel request",
                    f"{name}: bare view, same middleware",
                    at_most=1.5,
                )
        raw.close()
