"""Faults and hostile input against the real stack (issue 15): ``python -m bench faults``.

A small seeded data set (not the 1M template) in ``STOREOPS_BENCH_FAULTS_DB`` (default
``storeops_hf``, plus ``_shard_0`` and ``_shard_1``), served by gunicorn (2 workers x 4
threads, the project's settings) with:

- a loopback TCP proxy the suite controls (pass / refuse / blackhole) in front of
  ``shard_1`` and another in front of the streaming replica (``scripts/pg_replica.py``,
  port ``STOREOPS_BENCH_REPLICA_PORT``, default 5441);
- its own ``redis-server`` on a free port (>= 17000), killed and restarted.

Phases, each bounded in time: a baseline; shard_1 blackholed (its customers' pages must
answer 503 within ``STOREOPS_SHARD_TIMEOUT`` + 1 s, other pages' p99 stay within 1.5x
of the baseline, ``/readyz`` and the shard-health panel report it within 3 s); the
replica blackholed (reads go on from the primary within the replica deadline); every
worker SIGKILLed while a low-stock recompute waits on a table lock (fresh data within
30 s); Redis killed and restarted (cache hits again within one breaker period); a
fuzz of the contract's URLs, headers and forms (>= 3,000 requests, 0 5xx). Then the
invariants: stock == initial + ledger, one effect per idempotency key, no response
showing another user's name.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

import psycopg

from bench import harness, webserver
from bench.fault_http import CHECKS, TALLY, check, load, request
from bench.fuzz import phase_fuzz
from bench.load import COMPUTED_AT, percentile
from bench.webserver import worker_pids
from scripts import pg_replica
from store.tests.redis_server import RedisServer
from store.tests.tcp_proxy import TcpProxy

BASE = os.environ.get("STOREOPS_BENCH_FAULTS_DB", "storeops_hf")
REPLICA_PORT = int(os.environ.get("STOREOPS_BENCH_REPLICA_PORT", "5441"))
SHARD_TIMEOUT = 2.0  # the default STOREOPS_SHARD_TIMEOUT
REPLICA_TIMEOUT = 5.0  # the default STOREOPS_REPLICA_TIMEOUT
GRACE = 0.5  # store.deadlines.GRACE_SECONDS
BREAKER_SECONDS = 5.0  # the default STOREOPS_CACHE_BREAKER_SECONDS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--fuzz", type=int, default=3200, help="fuzzed requests (>= 3000)")
    parser.add_argument("--seed", type=int, default=15)


def _free_port(start: int = 17000) -> int:
    for port in range(start, start + 2000):
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port >= 17000")


# --- the stack ---------------------------------------------------------------------


@contextlib.contextmanager
def gunicorn(env: dict[str, str], log: Path) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    web_env = os.environ | env | {"DEBUG": "false", "ALLOWED_HOSTS": "127.0.0.1"}
    web_env.pop("STOREOPS_STATEMENT_TIMEOUT", None)  # the defaults, as deployed
    with webserver.serve(web_env, log, extra=("--timeout", "60")) as (proc, port):
        yield proc, port


def _prepare_data(env: dict[str, str], seed: int) -> None:
    harness.create_empty(BASE)
    subprocess.run(
        [
            *(sys.executable, "manage.py", "seed_demo", "--products", "3000", "--orders"),
            *("2000", "--customers", "400", "--seed", str(seed), "--no-progress"),
        ],
        cwd=harness.ROOT,
        env=os.environ | env,
        check=True,
        stdout=subprocess.DEVNULL,
    )


def _wait_replayed(replica_url: str) -> None:
    with psycopg.connect(f"{harness.SERVER}/postgres", autocommit=True) as primary:
        lsn = primary.execute("SELECT pg_current_wal_lsn()::text").fetchone()[0]  # type: ignore[index]
    deadline = time.monotonic() + 120
    while True:
        with (
            contextlib.suppress(psycopg.Error),
            psycopg.connect(f"{replica_url}/postgres", connect_timeout=2) as conn,
        ):
            row = conn.execute("SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", [lsn]).fetchone()
            if row and row[0]:
                return
        if time.monotonic() > deadline:
            raise RuntimeError("the replica did not catch up in 120 s")
        time.sleep(0.2)


def _sessions() -> dict[str, str]:
    """Logged-in users (cookie header per name): three viewers and two operators."""
    from bench.live_setup import sessions as live_sessions

    viewers, operator = live_sessions(3)
    names = [f"bench-live-viewer-{n}" for n in range(3)]
    return {**dict(zip(names, viewers, strict=True)), "bench-live-operator": operator}


# --- phases --------------------------------------------------------------------------


def _customers_by_shard() -> dict[str, list[int]]:
    from store.models import CustomerProfile

    return {
        alias: list(
            CustomerProfile.objects.using(alias)
            .order_by("user_id")
            .values_list("user_id", flat=True)[:20]
        )
        for alias in ("shard_0", "shard_1")
    }


def _hx(cookie: str, name: str = "") -> dict[str, str]:
    headers = {"Cookie": cookie}
    if name:
        headers |= {"HX-Request": "true", "HX-Target": f"panel-{name}"}
    return headers


def phase_shard(
    run: harness.Run, port: int, proxy: TcpProxy, cookie: str, users: dict[str, list[int]]
) -> None:
    others = [
        ("/products/?per_page=25", _hx(cookie)),
        ("/orders/", _hx(cookie)),
        ("/panels/category-stats/", _hx(cookie, "category-stats")),
        *[(f"/customers/{uid}/", _hx(cookie)) for uid in users["shard_0"][:5]],
    ]
    on_shard_1 = [(f"/customers/{uid}/", _hx(cookie)) for uid in users["shard_1"][:5]]
    # Baseline, with kept-open connections to shard_1 in every worker thread.
    load(port, on_shard_1, 3, threads=4)
    baseline = load(port, others, 8)
    base_p99 = percentile([a.seconds for a in baseline if a.status == 200], 99) * 1000

    proxy.set_mode("blackhole")
    blackholed_at = time.monotonic()
    reported: dict[str, float] = {}

    def readyz_reports() -> bool:
        answer = request(port, "/readyz", deadline=3)
        with contextlib.suppress(ValueError, KeyError):
            return json.loads(answer.body)["databases"]["shard_1"]["status"] == "down"
        return False

    def panel_reports() -> bool:
        answer = request(
            port, "/panels/shard-health/", headers=_hx(cookie, "shard-health"), deadline=3
        )
        return re.search(rb"shard_1.{0,400}?\bdown\b", answer.body, re.DOTALL) is not None

    def watch(name: str, reports: Callable[[], bool]) -> None:
        # Each watcher polls on its own: one waiting on a slow answer must not delay
        # the other's first look (they were asked in turn, which added /readyz's
        # 2 s to the panel's figure).
        while time.monotonic() - blackholed_at < 10:
            if reports():
                reported[name] = time.monotonic() - blackholed_at
                return
            time.sleep(0.1)

    with ThreadPoolExecutor(4) as pool:
        watchers = [pool.submit(watch, "readyz", readyz_reports)]
        watchers.append(pool.submit(watch, "panel", panel_reports))
        during_f = pool.submit(load, port, others, 10)
        shard_f = pool.submit(load, port, on_shard_1, 10, threads=2, deadline=SHARD_TIMEOUT + 1)
        for watcher in watchers:
            watcher.result()
        during, shard_pages = during_f.result(), shard_f.result()
    proxy.set_mode("pass")
    recovered = _until(
        lambda: (
            request(port, on_shard_1[0][0], headers=on_shard_1[0][1], count=False).status == 200
        ),
        15,
    )

    during_p99 = percentile([a.seconds for a in during if a.status == 200], 99) * 1000
    statuses = Counter(a.status for a in shard_pages)
    slowest = max(a.seconds for a in shard_pages)
    run.record("shard blackholed: its customer pages, slowest answer", slowest * 1000, unit="ms")
    run.record("shard blackholed: other pages p99, baseline", base_p99, unit="ms")
    run.record("shard blackholed: other pages p99, during", during_p99, unit="ms")
    run.record(
        "shard blackholed: /readyz reports it", reported.get("readyz", float("inf")), unit="s"
    )
    run.record(
        "shard blackholed: shard-health panel reports it",
        reported.get("panel", float("inf")),
        unit="s",
    )
    run.record("shard back: its pages answer 200 after", recovered, unit="s")
    run.note(
        f"shard_1 blackholed 10 s: its customer pages {dict(statuses)} (n={len(shard_pages)}), "
        f"slowest {slowest:.2f} s (target <= {SHARD_TIMEOUT + 1:g} s); other pages p99 "
        f"{base_p99:.0f} -> {during_p99:.0f} ms (target <= 1.5x); 5xx on other pages: "
        f"{sum(1 for a in during if a.status >= 500 or a.status == 0)}"
    )
    check(
        run,
        "shard pages 503 within timeout + 1 s",
        slowest <= SHARD_TIMEOUT + 1 and set(statuses) <= {503},
    )
    check(run, "other pages p99 within 1.5x", during_p99 <= 1.5 * max(base_p99, 1.0))
    check(
        run,
        "/readyz and shard health report it within 3 s",
        max(reported.values(), default=99) <= 3 and len(reported) == 2,
    )


def phase_replica(run: harness.Run, port: int, proxy: TcpProxy, cookie: str) -> None:
    reads = [(f"/products/?per_page=25&page={n}", _hx(cookie)) for n in range(1, 6)]
    load(port, reads, 3, threads=4)  # kept-open replica connections in the workers
    proxy.set_mode("blackhole")
    answers = load(port, reads, 8, threads=3, deadline=REPLICA_TIMEOUT + GRACE + 1)
    proxy.set_mode("pass")
    slowest = max(a.seconds for a in answers)
    statuses = Counter(a.status for a in answers)
    run.record("replica blackholed: reads, slowest answer", slowest * 1000, unit="ms")
    run.record(
        "replica blackholed: reads, p50",
        percentile([a.seconds for a in answers], 50) * 1000,
        unit="ms",
    )
    run.note(
        f"replica blackholed 8 s: product pages {dict(statuses)} (n={len(answers)}), "
        f"slowest {slowest:.2f} s (target <= {REPLICA_TIMEOUT + GRACE:g} s)"
    )
    check(
        run,
        "replica reads continue within the replica deadline",
        slowest <= REPLICA_TIMEOUT + GRACE + 0.5 and set(statuses) == {200},
    )


def phase_worker_kill(
    run: harness.Run, port: int, proc: subprocess.Popen[bytes], cookie: str, operator: str
) -> None:
    from store.models import Product
    from store.services.stock import stock_adjust

    panel = ("/panels/low-stock/", _hx(cookie, "low-stock"))
    request(port, panel[0], headers=panel[1])  # computed and cached
    product = Product.objects.using("default").filter(stock__gt=20).order_by("pk").first()
    assert product is not None
    written_at = time.time()
    stock_adjust(product=product.pk, delta=-(product.stock - 1), actor=None, reason="bench faults")
    with psycopg.connect(f"{harness.SERVER}/{BASE}", autocommit=False) as blocker:
        blocker.execute("LOCK TABLE store_product IN ACCESS EXCLUSIVE MODE")
        with ThreadPoolExecutor(1) as pool:
            pool.submit(request, port, panel[0], headers=panel[1], count=False)
            time.sleep(1.5)
            with psycopg.connect(f"{harness.SERVER}/postgres", autocommit=True) as admin:
                waiting = admin.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = %s"
                    " AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()",
                    [BASE],
                ).fetchone()[0]  # type: ignore[index]
            pids = worker_pids(proc.pid)
            for pid in pids:
                os.kill(pid, signal.SIGKILL)  # mid-recompute: it waits on the lock
            killed_at = time.monotonic()
            blocker.rollback()
    deadline = killed_at + 60

    def fresh() -> bool:
        answer = request(port, panel[0], headers=panel[1], count=False)
        found = COMPUTED_AT.search(answer.body)
        return (
            bool(found)
            and datetime.fromisoformat(found.group(1).decode()).timestamp() >= written_at
        )

    took = _until(fresh, deadline - time.monotonic())
    run.record("worker killed mid-recompute: fresh data after", took, unit="s")
    run.note(
        f"killed {len(pids)} workers while {waiting} queries waited on the lock (the "
        f"recompute); fresh low-stock data {took:.1f} s later (target <= 30 s)"
    )
    check(run, "fresh data within 30 s of a worker killed mid-recompute", took <= 30)


def phase_redis(run: harness.Run, port: int, redis_server: RedisServer, cookie: str) -> None:
    import redis

    pages = [
        (f"/panels/{name}/", _hx(cookie, name))
        for name in ("category-stats", "shop-activity", "trending")
    ]
    load(port, pages, 2)
    redis_server.kill()
    down = load(port, pages, 6)
    redis_server.start()
    restarted = time.monotonic()
    client = redis.Redis(port=redis_server.port)
    hits = int(client.info("stats")["keyspace_hits"])
    took = float("inf")
    stop = restarted + 20
    with ThreadPoolExecutor(1) as pool:
        traffic = pool.submit(load, port, pages, 12, threads=2)
        while time.monotonic() < stop and not traffic.done():
            if int(client.info("stats")["keyspace_hits"]) > hits + 5:
                took = time.monotonic() - restarted
                break
            time.sleep(0.1)
        traffic.result()
    client.close()
    errors = sum(1 for a in down if a.status >= 500 or a.status == 0)
    run.record("redis restarted: cache hits again after", took, unit="s")
    run.note(
        f"redis killed 6 s: {len(down)} panel requests, {errors} 5xx; after restart cache "
        f"hits in {took:.1f} s (target <= {BREAKER_SECONDS:g} s)"
    )
    check(run, "cache hits within one breaker period", took <= BREAKER_SECONDS)


def invariants(run: harness.Run) -> None:
    with psycopg.connect(f"{harness.SERVER}/{BASE}") as conn:
        stock = conn.execute(
            "SELECT count(*) FROM store_product p WHERE p.stock <> p.initial_stock + coalesce("
            "(SELECT sum(m.delta) FROM store_stockmovement m WHERE m.product_id = p.id), 0)"
        ).fetchone()[0]  # type: ignore[index]
        twice = conn.execute(
            "SELECT count(*) FROM (SELECT idempotency_key FROM store_stockmovement"
            " WHERE idempotency_key <> '' GROUP BY actor_id, idempotency_key HAVING count(*) > 1) d"
        ).fetchone()[0]  # type: ignore[index]
        movements = conn.execute("SELECT count(*) FROM store_stockmovement").fetchone()[0]  # type: ignore[index]
    run.record("invariant: products whose stock != initial + ledger", stock, unit="n")
    run.record("invariant: idempotency keys applied more than once", twice, unit="n")
    run.note(
        f"invariants over {movements} ledger rows: {stock} stock mismatches, "
        f"{twice} keys applied twice"
    )
    check(run, "0 invariant violations", stock == 0 and twice == 0)


# --- helpers and entry point -----------------------------------------------------------


def _until(predicate: Callable[[], bool], limit: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < limit:
        if predicate():
            return time.monotonic() - started
        time.sleep(0.2)
    return float("inf")


def run(run: harness.Run, reps: int | None = None, fuzz: int = 3200, seed: int = 15) -> None:
    started = time.monotonic()
    # A replica this run starts is stopped at its end: left streaming, it would replay
    # (and slow) everything later benchmarks write, clones of templates included.
    own_replica = not pg_replica.is_up(REPLICA_PORT)
    replica_url = pg_replica.start(REPLICA_PORT)
    workdir = Path(tempfile.mkdtemp(prefix="bench-faults-"))
    redis_server = RedisServer(_free_port(), workdir)
    redis_server.start()
    shard_proxy = TcpProxy("127.0.0.1", 5432, port=_free_port(17200))
    replica_host, replica_port = replica_url.rsplit("@", 1)[1].split(":")
    replica_proxy = TcpProxy(replica_host, int(replica_port), port=_free_port(17300))
    try:
        env = harness.django_env(BASE)
        main, shard_0, _ = harness.database_names(BASE)
        env |= {
            "DATABASE_SHARD_URLS": f"{harness.SERVER}/{shard_0},postgres://postgres@127.0.0.1:{shard_proxy.port}/{BASE}_shard_1",
            "REDIS_URL": redis_server.url,
            "STOREOPS_VAR_DIR": str(workdir),
        }
        _prepare_data(env, seed)
        _wait_replayed(replica_url)
        env["DATABASE_REPLICA_URLS"] = f"postgres://postgres@127.0.0.1:{replica_proxy.port}/{main}"
        harness.setup_django(env)
        cookies = _sessions()
        viewer = cookies["bench-live-viewer-0"]
        users = _customers_by_shard()
        _wait_replayed(replica_url)
        with gunicorn(env, workdir / "gunicorn.log") as (proc, port):
            phase_shard(run, port, shard_proxy, viewer, users)
            phase_replica(run, port, replica_proxy, viewer)
            phase_worker_kill(run, port, proc, viewer, cookies["bench-live-operator"])
            phase_redis(run, port, redis_server, viewer)
            phase_fuzz(run, port, cookies, fuzz, seed)
            fault_errors = TALLY.server_errors
        invariants(run)
        expected_503 = TALLY.statuses[503]
        run.record("all phases: requests sent", TALLY.sent, unit="n")
        run.record(
            "all phases: 5xx (503 from the blackholed shard included)",
            TALLY.server_errors,
            unit="n",
        )
        run.record("all phases: answers past their deadline", len(TALLY.past_deadline), unit="n")
        run.note(
            f"all phases: {TALLY.sent} requests, statuses "
            f"{dict(sorted(TALLY.statuses.items()))}; 5xx {fault_errors} of which 503 "
            f"{expected_503}; past deadline {len(TALLY.past_deadline)} "
            f"{TALLY.past_deadline[:5]}; wall time {time.monotonic() - started:.0f} s"
        )
        missed = [name for name, ok in CHECKS if not ok]
        run.note("every target met" if not missed else f"MISSED: {', '.join(missed)}")
    finally:
        shard_proxy.close()
        replica_proxy.close()
        redis_server.kill()
        with contextlib.suppress(Exception):
            from django.db import connections

            connections.close_all()
        harness.drop_databases(BASE)
        if own_replica:
            pg_replica.stop(REPLICA_PORT)
