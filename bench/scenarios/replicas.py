"""Read scale-out with a streaming replica, and what the stickiness middleware costs.

Data: the 1,000,000-product clone. A real hot standby of the bench server is started
with ``scripts/pg_replica.py`` (port ``STOREOPS_BENCH_REPLICA_PORT``, default 5433;
reused when already up); the clone replicates to it like any other database.

1. Throughput of the products page (``/products/?per_page=50&page=N``, a different
   page per request, full middleware, session and permission checks) with 0 and 1
   replica: ``WORKERS`` processes loop for ``SECONDS`` each and count answers; each
   worker also counts the statements each database served (reads split). The two
   configurations alternate, ``ROUNDS`` times each.
2. The same throughput when every request is pinned after a write: the pin as a WAL
   position (the replica serves once it has replayed past it: one position check)
   against the pin as a timer (the primary serves the whole window), as a ratio.
3. Stickiness middleware cost per request, in one process, interleaved: a minimal
   request (``/healthz``, no database) and the products page, with and without the
   middleware (``--reps`` requests each, default 200); a pinned request (its cookie
   carries a WAL position, which costs the replica one ``pg_last_wal_replay_lsn()``
   check) vs an unpinned one; and the middleware alone around a view that returns
   at once (microseconds per call, no I/O).

On this machine the primary and the replica share the same 2 cores with the web
workers, so a replica cannot add CPU: the throughput ratio shows the routing costs
nothing and how reads split, not the capacity a second server would bring.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import Any

from bench import harness
from bench.scenarios.tables import _client  # a logged-in superuser's test client
from scripts import pg_replica

# Overridable so that runs sharing a server do not clone into the same database.
BASE = os.environ.get("STOREOPS_BENCH_REPLICAS_DB", "storeops_bench_replicas")
WORKERS = 4
SECONDS = 6.0
ROUNDS = 4
HOST = {"HTTP_HOST": "127.0.0.1"}
REPLICA_PORT = int(os.environ.get("STOREOPS_BENCH_REPLICA_PORT", "5433"))


def throughput_child(seconds: float, offset: int) -> None:
    """In a fresh process: request product pages for ``seconds``; print counts as JSON."""
    import django

    django.setup()
    from django.db import connections

    counts: dict[str, int] = {}

    def counter(alias: str) -> Any:
        def wrapper(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
            counts[alias] = counts.get(alias, 0) + 1
            return execute(sql, params, many, context)

        return wrapper

    client = _client()
    pin = os.environ.get("STOREOPS_BENCH_PIN", "")
    if pin:
        from django.core.signing import get_cookie_signer

        from dashboard.middleware import COOKIE, SALT

        signer = get_cookie_signer(salt=COOKIE + SALT)
        # A writer's pin: "lsn" carries a position the replica has long passed (it
        # reads the replica after one position check), "timer" none (the primary
        # for the whole window, what a timer-only pin does).
        value = "0/1" if pin == "lsn" else ""
    wrappers = [connections[a].execute_wrapper(counter(a)) for a in connections.settings]
    for w in wrappers:
        w.__enter__()
    requests = 0
    page = offset
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        page = page % 2000 + 1
        if pin:
            client.cookies[COOKIE] = signer.sign(value)  # re-set: dropped once passed
        response = client.get(f"/products/?per_page=50&page={page}", **HOST)
        if response.status_code != 200:
            raise RuntimeError(f"/products/ answered {response.status_code}")
        requests += 1
    print(json.dumps({"requests": requests, "queries": counts}))


def _throughput(env: dict[str, str]) -> tuple[float, dict[str, int]]:
    code = (
        "import sys; from bench.scenarios.replicas import throughput_child; "
        "throughput_child(float(sys.argv[1]), int(sys.argv[2]))"
    )
    child_env = os.environ | env | {"DJANGO_SETTINGS_MODULE": "config.settings"}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(SECONDS), str(n * 500)],
            cwd=harness.ROOT,
            env=child_env,
            stdout=subprocess.PIPE,
            text=True,
        )
        for n in range(WORKERS)
    ]
    total = 0
    queries: dict[str, int] = {}
    for proc in procs:
        out, _ = proc.communicate(timeout=SECONDS + 120)
        if proc.returncode:
            raise RuntimeError("a throughput worker failed")
        result = json.loads(out.strip().splitlines()[-1])
        total += result["requests"]
        for alias, n in result["queries"].items():
            queries[alias] = queries.get(alias, 0) + n
    return total / SECONDS, queries


def _wait_replayed(replica_url: str, primary_url: str) -> None:
    import psycopg

    with psycopg.connect(primary_url, autocommit=True) as conn:
        lsn = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()[0]  # type: ignore[index]
    deadline = time.monotonic() + 120
    while True:
        try:
            with psycopg.connect(replica_url, autocommit=True, connect_timeout=2) as conn:
                row = conn.execute(
                    "SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", [lsn]
                ).fetchone()
                if row and row[0]:
                    return
        except psycopg.OperationalError:
            pass  # the new database may not be replayed yet
        if time.monotonic() > deadline:
            raise RuntimeError("the replica did not catch up with the clone")
        time.sleep(0.5)


def run(run: harness.Run, *, reps: int | None) -> None:
    replica_server = pg_replica.start(REPLICA_PORT)
    with harness.cloned(BASE) as env:
        replica_env = env | {"DATABASE_REPLICA_URLS": f"{replica_server}/{BASE}"}
        _wait_replayed(f"{replica_server}/{BASE}", env["DATABASE_URL"])
        _client_setup(env)
        _wait_replayed(f"{replica_server}/{BASE}", env["DATABASE_URL"])
        none, one = [], []
        split: dict[str, int] = {}
        for _ in range(ROUNDS):
            none.append(_throughput(env)[0])
            rps, split = _throughput(replica_env)
            one.append(rps)
        run.record("products page, 0 replicas (req/s)", none, unit="rps")
        run.record("products page, 1 replica (req/s)", one, unit="rps")
        run.ratio(
            "throughput 1 replica / 0 replicas",
            "products page, 1 replica (req/s)",
            "products page, 0 replicas (req/s)",
            at_least=0.9,
        )
        replica_share = split.get("replica_0", 0) / max(1, sum(split.values()))
        run.record("statements served by the replica (%)", 100 * replica_share, unit="%")
        run.note(f"statements per database with 1 replica (last round): {split}")
        run.note(f"{WORKERS} worker processes x {SECONDS:g} s per round; 2 cores for everything")
        _pin_throughput(run, replica_env)
        _middleware_cost(run, replica_env, reps or 200)


def _pin_throughput(run: harness.Run, env: dict[str, str]) -> None:
    """Every worker just wrote (pinned): pins as positions against pins as timers."""
    lsn, timer = [], []
    for _ in range(ROUNDS):
        lsn.append(_throughput(env | {"STOREOPS_BENCH_PIN": "lsn"})[0])
        timer.append(_throughput(env | {"STOREOPS_BENCH_PIN": "timer"})[0])
    run.record("products page, pinned, LSN pin (req/s)", lsn, unit="rps")
    run.record("products page, pinned, timer pin (req/s)", timer, unit="rps")
    run.ratio(
        "pinned products page: LSN pins / timer pins",
        "products page, pinned, LSN pin (req/s)",
        "products page, pinned, timer pin (req/s)",
        at_least=0.9,
    )


def _client_setup(env: dict[str, str]) -> None:
    """Create the bench login on the primary (it must exist before the replica reads)."""
    code = "import django; django.setup(); from bench.scenarios.replicas import _client; _client()"
    subprocess.run(
        [sys.executable, "-c", code],
        cwd=harness.ROOT,
        env=os.environ | env | {"DJANGO_SETTINGS_MODULE": "config.settings"},
        check=True,
    )


def _middleware_cost(run: harness.Run, env: dict[str, str], reps: int) -> None:
    out = subprocess.run(
        [sys.executable, "-c", "from bench.scenarios.replicas import cost_child; cost_child()"],
        cwd=harness.ROOT,
        env=os.environ | env | {"DJANGO_SETTINGS_MODULE": "config.settings", "REPS": str(reps)},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    result = json.loads(out.strip().splitlines()[-1])
    for name, samples in result.items():
        run.record(name, samples, unit="ms")
    run.note("'middleware alone, per call': the middleware around a view that returns at once")
    run.ratio(
        "healthz: with / without stickiness",
        "healthz, with middleware",
        "healthz, without middleware",
        at_most=1.10,
    )
    run.ratio(
        "products: with / without stickiness",
        "products, with middleware",
        "products, without middleware",
        at_most=1.05,
    )
    run.ratio(
        "products: pinned (LSN check) / unpinned",
        "products, pinned",
        "products, with middleware",
        at_most=1.10,
    )


def cost_child() -> None:
    """Interleaved per-request timings, with and without the middleware, in one process."""
    import django

    django.setup()
    from django.conf import settings
    from django.test import Client, override_settings

    from dashboard.middleware import COOKIE, SALT

    reps = int(os.environ["REPS"])
    user_client = _client()
    session_cookie = user_client.cookies[settings.SESSION_COOKIE_NAME].value
    without = [m for m in settings.MIDDLEWARE if not m.endswith("PrimaryStickinessMiddleware")]

    def client(*, sticky: bool) -> Client:
        if sticky:
            c = Client()
        else:
            with override_settings(MIDDLEWARE=without):
                c = Client()
                c.get("/healthz", **HOST)  # the handler loads its middleware on first use
        c.cookies[settings.SESSION_COOKIE_NAME] = session_cookie
        return c

    with_mw, without_mw = client(sticky=True), client(sticky=False)
    pinned = client(sticky=True)
    from django.core.signing import get_cookie_signer

    # A pin whose LSN the replica has long passed: the request pays the check, then reads
    # from the replica (the real cookie is dropped on the first answer; re-set it each time).
    signer = get_cookie_signer(salt=COOKIE + SALT)
    samples: dict[str, list[float]] = {
        name: []
        for name in (
            "healthz, with middleware",
            "healthz, without middleware",
            "products, with middleware",
            "products, without middleware",
            "products, pinned",
        )
    }

    def timed(name: str, c: Client, url: str) -> None:
        started = time.perf_counter()
        response = c.get(url, **HOST)
        samples[name].append((time.perf_counter() - started) * 1000)
        if response.status_code != 200:
            raise RuntimeError(f"{url} answered {response.status_code}")

    pairs = [
        ("healthz, with middleware", with_mw, "healthz, without middleware", without_mw),
        ("products, with middleware", with_mw, "products, without middleware", without_mw),
    ]
    for n in range(reps + 10):
        url = f"/products/?per_page=50&page={n % 500 + 1}"
        for first, c1, second, c2 in pairs:
            target = "/healthz" if first.startswith("healthz") else url
            # Alternate which variant goes first, so neither always follows the other.
            order = [(first, c1), (second, c2)] if n % 2 else [(second, c2), (first, c1)]
            for name, c in order:
                timed(name, c, target)
        pinned.cookies[COOKIE] = signer.sign("0/1")  # fresh: the pin is valid for seconds
        timed("products, pinned", pinned, url)
    samples["middleware alone, per call"] = _middleware_alone()
    # Drop the warm-up requests.
    print(json.dumps({name: values[10:] for name, values in samples.items()}))


def _middleware_alone() -> list[float]:
    """The middleware around a view that returns at once, per call (ms), 10+N batches."""
    from django.http import HttpResponse
    from django.test import RequestFactory

    from dashboard.middleware import PrimaryStickinessMiddleware

    middleware = PrimaryStickinessMiddleware(lambda request: HttpResponse("ok"))
    request = RequestFactory().get("/healthz")
    batches = []
    for _ in range(40):
        started = time.perf_counter()
        for _ in range(1000):
            middleware(request)
        batches.append((time.perf_counter() - started) / 1000 * 1000)
    return batches
