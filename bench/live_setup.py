"""``bench live``'s stack and what it measures before the viewers come: gunicorn with
the web's own settings, the viewers' sessions, each panel's cold compute, requests/s
of a warm panel and of ``/`` against a bare logged-in view, and the CSV export over
HTTP against ``psql \\copy`` of the same SELECT."""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from bench import harness, webserver
from bench.load import Client, requests_per_second
from bench.webserver import peak_rss_mb, with_app, worker_pids
from bench.write_stream import OPERATOR

WEB_APP = "storeops-web"
COLD_REPS = 9
HTTP_REPS = 6
WARM_PANEL = "/panels/low-stock/"
BARE = "/bench/bare/"
# The targets for these ratios.
WARM_PANEL_RATIO = 0.8
INDEX_RATIO = 0.5
EXPORT_RATIO = 0.8

# --- gunicorn ----------------------------------------------------------------------


# For the HTTP ratios: wrk's 8 keep-alive connections, 4 per worker (one per thread).
# By default a gthread worker accepts whatever arrives first, and one worker often took
# 6 to 8 of the 8 while the other idled: requests/s of one endpoint swung 2x between
# runs (measured: 184-451 for the bare view), deciding the ratios by chance.
BALANCED = ("--worker-connections", "4")


@contextlib.contextmanager
def gunicorn(
    env: dict[str, str], log: Path, *, extra: tuple[str, ...] = ()
) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    shard_urls = env["DATABASE_SHARD_URLS"].split(",")
    web_env = (
        os.environ
        | env
        | {
            "DJANGO_SETTINGS_MODULE": "bench.settings",
            # The web workers' backends are told apart by this in pg_stat_activity.
            "DATABASE_URL": with_app(env["DATABASE_URL"], WEB_APP),
            "DATABASE_SHARD_URLS": ",".join(with_app(url, WEB_APP) for url in shard_urls),
            "REDIS_URL": harness.REDIS,
            "DEBUG": "false",
            "ALLOWED_HOSTS": "127.0.0.1",
            "STOREOPS_LOG_LEVEL": "WARNING",
        }
    )
    web_env.pop("STOREOPS_CONN_MAX_AGE", None)  # the default, as deployed
    web_env.pop("STOREOPS_STATEMENT_TIMEOUT", None)  # the web's own, not the bench's 0
    with webserver.serve(web_env, log, extra=extra) as (proc, port):
        yield proc, port


# --- In-process parts (Django on the clone) ----------------------------------------------


def sessions(viewers: int) -> tuple[list[str], str]:
    """N ops-viewers and one ops-operator, each with a session; their Cookie headers."""
    from importlib import import_module

    from django.conf import settings
    from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
    from django.contrib.auth.models import Group, User
    from django.utils.module_loading import import_string

    from store.permissions import ops_groups_sync

    ops_groups_sync()
    store = import_module(settings.SESSION_ENGINE).SessionStore
    # The backend login() would record: the first that can load a user (axes' comes
    # first and only counts failures).
    backend = next(
        path
        for path in settings.AUTHENTICATION_BACKENDS
        if hasattr(import_string(path), "get_user")
    )

    def user(name: str, group: str) -> str:
        person = User(username=name)
        person.set_unusable_password()
        person.save()
        person.groups.add(Group.objects.get(name=group))
        # What django.contrib.auth.login() stores, without a password round trip.
        session = store()
        session[SESSION_KEY] = str(person.pk)
        session[BACKEND_SESSION_KEY] = backend
        session[HASH_SESSION_KEY] = person.get_session_auth_hash()
        session.save()
        return f"{settings.SESSION_COOKIE_NAME}={session.session_key}"

    cookies = [user(f"bench-live-viewer-{n}", "ops-viewer") for n in range(viewers)]
    return cookies, user(OPERATOR, "ops-operator")


def flush_redis() -> None:
    import redis

    with redis.Redis.from_url(harness.REDIS) as client:
        client.flushdb()


def cold_compute(run: harness.Run, size: str) -> list[str]:
    """Each panel's selector once on an empty cache, COLD_REPS times; returns panel names."""
    from dashboard.panels import PANELS

    names = []
    for name, panel in PANELS.items():
        names.append(name)
        params, _ = panel.form().params()
        samples = []
        for _ in range(COLD_REPS):
            flush_redis()
            started = time.perf_counter()
            panel.compute(params)
            samples.append((time.perf_counter() - started) * 1000)
        run.record(f"{size} cold compute: {name}", samples, unit="ms")
    return names


def _export_select() -> str:
    """The SELECT the products CSV export sends to COPY, built by the export's own code."""
    from django.db import connection
    from psycopg import ClientCursor

    from dashboard.exports import export_columns, export_queryset, export_values
    from dashboard.tables import RowActions
    from dashboard.views.tables import PRODUCTS

    rows = PRODUCTS.filterset_class(None, queryset=PRODUCTS.rows()).qs
    table = PRODUCTS.table_class(
        rows, order_by=",".join(PRODUCTS.default_sort), actions=RowActions(True, True)
    )
    values, _ = export_values(export_queryset(table), export_columns(table), "csv")
    sql, params = values.query.sql_with_params()
    connection.ensure_connection()
    text = ClientCursor(connection.connection).mogrify(sql, params) if params else sql % ()
    return " ".join(text.split())


# --- The measurements ------------------------------------------------------------------


def http_ratios(
    run: harness.Run, size: str, port: int, viewer: str, seconds: int, client: Client
) -> None:
    targets = {
        "bare view": (BARE, False),
        "warm panel": (WARM_PANEL, True),
        "/": ("/", False),
    }
    for path, hx in targets.values():
        headers = {"Cookie": viewer} | ({"HX-Request": "true"} if hx else {})
        for _ in range(2):  # the panel's fragment is cached by the first
            status, _ = client.get(path, headers)
            if status != 200:
                raise RuntimeError(f"{path} answered {status} to a logged-in viewer")
    for path, hx in targets.values():  # a second of each first, unrecorded: warm workers
        requests_per_second(port, path, viewer, hx, 1)
    rates: dict[str, list[float]] = {name: [] for name in targets}
    for _ in range(HTTP_REPS):  # interleaved
        for name, (path, hx) in targets.items():
            rates[name].append(requests_per_second(port, path, viewer, hx, seconds))
    for name, values in rates.items():
        run.record(f"{size} HTTP req/s: {name}", values, unit="rq/s")
    bare = f"{size} HTTP req/s: bare view"
    run.ratio(
        f"{size}: warm panel / bare view",
        f"{size} HTTP req/s: warm panel",
        bare,
        at_least=WARM_PANEL_RATIO,
    )
    run.ratio(
        f"{size}: dashboard page / bare view", f"{size} HTTP req/s: /", bare, at_least=INDEX_RATIO
    )


def export_ratio(
    run: harness.Run, size: str, port: int, operator: str, master: int, products: int, db: str
) -> None:
    select = _export_select()
    before = max(peak_rss_mb(pid) for pid in worker_pids(master))
    http_rates, psql_rates = [], []
    for _ in range(HTTP_REPS):  # interleaved
        started = time.perf_counter()
        out = subprocess.run(
            ["psql", db, "-X", "-c", f"\\copy ({select}) to /dev/null with (format csv)"],
            check=True,
            capture_output=True,
            text=True,
            timeout=600,
        )
        psql_rates.append(products / (time.perf_counter() - started))
        copied = re.search(r"COPY (\d+)", out.stdout)
        if out.stderr.strip() or not copied or int(copied.group(1)) != products:
            raise RuntimeError(f"psql \\copy: {out.stdout} {out.stderr}")
        started = time.perf_counter()
        curl = subprocess.Popen(
            [
                *("curl", "-sS", "--fail", "--max-time", "600", "-H", f"Cookie: {operator}"),
                f"http://127.0.0.1:{port}/products/?_export=csv",
            ],
            stdout=subprocess.PIPE,
        )
        lines = subprocess.run(
            ["wc", "-l"], stdin=curl.stdout, check=True, capture_output=True, text=True
        ).stdout
        if curl.stdout is not None:
            curl.stdout.close()
        if curl.wait(timeout=60) != 0:
            raise RuntimeError("curl failed on the CSV export")
        seconds = time.perf_counter() - started
        rows = int(lines.split()[0]) - 1  # the header line
        if rows != products:
            raise RuntimeError(f"the export sent {rows:,} rows, not {products:,}")
        http_rates.append(rows / seconds)
    after = max(peak_rss_mb(pid) for pid in worker_pids(master))
    run.record(f"{size} export: HTTP rows/s (curl)", http_rates, unit="rw/s")
    run.record(f"{size} export: psql \\copy rows/s", psql_rates, unit="rw/s")
    run.record(f"{size} export: worker peak RSS before", before, unit="MB")
    run.record(f"{size} export: worker peak RSS after", after, unit="MB")
    run.ratio(
        f"{size}: export HTTP / psql \\copy",
        f"{size} export: HTTP rows/s (curl)",
        f"{size} export: psql \\copy rows/s",
        at_least=EXPORT_RATIO,
    )
    run.ratio(
        f"{size}: worker peak RSS after / before export",
        f"{size} export: worker peak RSS after",
        f"{size} export: worker peak RSS before",
    )
