"""The live dashboard under real traffic, over HTTP under gunicorn (issue 10).

``uv run python -m bench live [--size 2m|8m|both] [--seconds 120] [--viewers 20]``

Per size (2m: the 1M-product / 2M-item template; 8m: the same store kept four times
as long, 8M items), on a clone, with the checked-out code:

1. cold compute: each panel's selector through the panel registry, in this
   process, on an empty cache (Redis flushed before each call), median of 3;
2. gunicorn (2 workers x 4 threads, ``bench.settings`` = the project's settings
   plus a bare view) on a free loopback port, Redis DB 3 flushed first; its
   database connections carry ``application_name=storeops-web``;
3. with no writes: requests/s of a warm panel and of ``/`` against the bare
   logged-in view (same permission check, returns "ok"), with wrk (or a threaded
   client when wrk is missing), interleaved; the CSV export of every product over
   HTTP (curl) against ``psql \\copy`` of the same SELECT, and the gunicorn
   workers' peak RSS (VmHWM) before and after;
4. two phases of the same length: viewers only, then viewers plus the write stream.
   N viewers (ops-viewer, logged in by session cookie) each load the dashboard
   every 5 s, staggered: ``GET /``, then every panel at once as HTMX requests
   (HX-Request: true), as the browser does, and a panel again a second later while
   its response asks for that (``data-repoll``: served stale while its refresh
   runs), as console.js does. The write stream runs in a separate
   process through the services at fixed rates (skipping slots more than 1 s
   late, never catching up in bursts): 50 ``stock_adjust``/s over random products,
   5/s on one hot product, 5 ``order_mark_paid``/s on open orders and 1
   ``order_cancel(refunded=True)``/s on paid orders (both picked up front), 1
   price change/s (``stock_set_optimistic`` with a new price).

Reported per panel and for ``/``: latency p50/p99, the age of the data shown
(the panel's "updated" badge, ``data-computed-at``, minus the time the response arrived;
responses without one are skipped), PostgreSQL CPU seconds per minute of the web
workers' backends (utime + stime from /proc/<pid>/stat, sampled every 0.5 s so
that backends that come and go are counted; parallel workers count for their
leader), each phase with writes against the one without, and 8m against 2m when
both sizes run in one invocation. Targets from the issue are ratios against
``target:`` figures (met / MISSED).
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import multiprocessing
import os
import random
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg

from bench import harness

BASE = "storeops_bench_live"
WEB_APP = "storeops-web"
WRITES_APP = "storeops-bench-writes"
MONITOR_APP = "storeops-bench-monitor"
OPERATOR = "bench-live-operator"
PERIOD = 5.0  # each viewer reloads the dashboard this often
# The write stream runs this long before the writes phase is measured: the issue asks
# for a steady stream, and the first reloads after the switch would otherwise count
# data that was computed (and valid) during the quiet phase as "old".
WRITE_LEAD = 2 * PERIOD
REQUEST_TIMEOUT = 60.0
BROWSER_CONNECTIONS = 6  # per viewer, as browsers do for HTTP/1.1
IDLE_RECONNECT = 1.5  # below gunicorn's 2 s keep-alive: never reuse a socket it may close
SAMPLE_EVERY = 0.5
COLD_REPS = 3
HTTP_REPS = 2
WARM_PANEL = "/panels/low-stock/"
BARE = "/bench/bare/"
# Writes per second through the services, as in the issue.
RATES = {"adjust": 50.0, "adjust hot": 5.0, "pay": 5.0, "cancel refunded": 1.0, "price": 1.0}
HOT_PRODUCT = 1
REPOLL = b"data-repoll"  # console.js fetches such a panel again after REPOLL_DELAY
REPOLL_DELAY = 1.0
COMPUTED_AT = re.compile(rb'data-computed-at="([^"]+)"')  # the panel's "updated" badge
# The targets.
PANEL_P99_MS = 200.0
INDEX_P99_MS = 300.0
AGE_P99_S = 5.0
PG_CPU_SHARE = 0.15  # of one core
COLD_MS = 50.0
COLD_GROWTH = 1.3
WARM_PANEL_RATIO = 0.8
INDEX_RATIO = 0.5
EXPORT_RATIO = 0.8


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--size", choices=("2m", "8m", "both"), default="2m")
    parser.add_argument("--seconds", type=int, default=120, help="length of each phase")
    parser.add_argument("--viewers", type=int, default=20)
    parser.add_argument(
        "--http-seconds", type=int, default=8, help="length of each requests/s measurement"
    )


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))  # ceil
    return ordered[int(rank) - 1]


# --- HTTP -----------------------------------------------------------------------


class Client:
    """Keep-alive HTTP/1.1 on loopback: one connection per thread, reopened when idle."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.local = threading.local()

    def _connection(self) -> http.client.HTTPConnection:
        conn = getattr(self.local, "conn", None)
        if conn is not None and time.monotonic() - self.local.used > IDLE_RECONNECT:
            conn.close()
            conn = None
        if conn is None:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=REQUEST_TIMEOUT)
            self.local.conn = conn
            self.local.used = time.monotonic()
        return conn

    def get(self, path: str, headers: dict[str, str]) -> tuple[int, bytes]:
        for attempt in (1, 2):
            conn = self._connection()
            try:
                conn.request("GET", path, headers={"Host": "127.0.0.1", **headers})
                response = conn.getresponse()
                body = response.read()
            except BaseException as exc:
                conn.close()  # a half-used connection is never reused
                self.local.conn = None
                stale = isinstance(exc, (http.client.RemoteDisconnected, ConnectionResetError))
                if attempt == 2 or not (stale or isinstance(exc, BrokenPipeError)):
                    raise
                continue
            self.local.used = time.monotonic()
            if response.will_close:
                conn.close()
                self.local.conn = None
            return response.status, body
        raise AssertionError("unreachable")


@dataclass
class Sample:
    endpoint: str
    ms: float
    age: float | None  # seconds; None when the response shows no "computed at"
    status: int
    repoll: bool = False  # the panel asks to be fetched again in a second (console.js)


def _fetch(client: Client, endpoint: str, path: str, cookie: str, hx: bool) -> Sample:
    headers = {"Cookie": cookie}
    if hx:
        headers |= {"HX-Request": "true", "HX-Current-URL": "http://127.0.0.1/"}
    started = time.perf_counter()
    try:
        status, body = client.get(path, headers)
    except (OSError, http.client.HTTPException):  # failures count, with their time
        status, body = 0, b""
    arrived = time.time()
    ms = (time.perf_counter() - started) * 1000
    age = None
    found = COMPUTED_AT.search(body) if status == 200 else None
    if found:
        age = arrived - datetime.fromisoformat(found.group(1).decode()).timestamp()
    return Sample(endpoint, ms, age, status, repoll=REPOLL in body)


def viewers_load(
    client: Client, cookies: list[str], panels: list[str], seconds: float
) -> tuple[list[Sample], int]:
    """Every viewer loads the whole dashboard every PERIOD s, staggered; bounded in time.

    Returns the samples and how many reloads were skipped because the viewer's
    previous one was still loading when the next was due.
    """
    samples: list[Sample] = []
    lock = threading.Lock()
    skipped = 0
    start = time.monotonic() + 0.2
    end = start + seconds

    def keep(sample: Sample) -> None:
        with lock:
            samples.append(sample)

    def reload(cookie: str, pool: ThreadPoolExecutor) -> None:
        keep(_fetch(client, "/", "/", cookie, hx=False))

        def load(name: str) -> None:
            # Like console.js: a panel served stale while its refresh runs is fetched
            # again a second later (those requests are load too).
            while True:
                sample = _fetch(client, name, f"/panels/{name}/", cookie, True)
                keep(sample)
                if not sample.repoll or time.monotonic() + REPOLL_DELAY >= end:
                    return
                time.sleep(REPOLL_DELAY)

        # The page's panels then load themselves at once (hx-trigger="load").
        futures = [pool.submit(load, name) for name in panels]
        wait(futures, timeout=2 * REQUEST_TIMEOUT)

    def viewer(n: int, cookie: str) -> None:
        nonlocal skipped
        tick = start + n * PERIOD / len(cookies)
        # A browser opens at most 6 HTTP/1.1 connections to one host.
        with ThreadPoolExecutor(BROWSER_CONNECTIONS, thread_name_prefix=f"viewer-{n}") as pool:
            while tick < end:
                time.sleep(max(0.0, tick - time.monotonic()))
                reload(cookie, pool)
                tick += PERIOD
                while tick < time.monotonic():  # still loading when the next was due
                    tick += PERIOD
                    with lock:
                        skipped += 1

    threads = [
        threading.Thread(target=viewer, args=(n, cookie), daemon=True, name=f"viewer-{n}")
        for n, cookie in enumerate(cookies)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=max(0.0, end - time.monotonic()) + 3 * REQUEST_TIMEOUT)
    with lock:
        return list(samples), skipped


def requests_per_second(
    client_port: int, path: str, cookie: str, hx: bool, seconds: int, connections: int = 8
) -> float:
    """wrk's requests/s (8 connections); a threaded keep-alive client if wrk is missing."""
    headers = {"Cookie": cookie}
    if hx:
        headers["HX-Request"] = "true"
    url = f"http://127.0.0.1:{client_port}{path}"
    if _have("wrk"):
        args = ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--timeout", "30s"]
        for name, value in headers.items():
            args += ["-H", f"{name}: {value}"]
        out = subprocess.run(
            [*args, url], check=True, capture_output=True, text=True, timeout=seconds + 60
        ).stdout
        if "Non-2xx or 3xx responses" in out:
            raise RuntimeError(f"wrk got error responses from {path}:\n{out}")
        found = re.search(r"Requests/sec:\s+([\d.]+)", out)
        if not found:
            raise RuntimeError(f"wrk printed no requests/s:\n{out}")
        settle(client_port)
        return float(found.group(1))
    client = Client(client_port)
    end = time.monotonic() + seconds
    counts = [0] * connections

    def loop(n: int) -> None:
        while time.monotonic() < end:
            status, _ = client.get(path, headers)
            if status != 200:
                raise RuntimeError(f"{path} answered {status}")
            counts[n] += 1

    with ThreadPoolExecutor(connections) as pool:
        for future in [pool.submit(loop, n) for n in range(connections)]:
            future.result()
    return sum(counts) / seconds


def settle(port: int, *, fast_ms: float = 20.0, limit: float = 60.0) -> None:
    """Wait until gunicorn is idle: wrk stops its clock with requests still queued,
    which would slow down the next measurement. Idle = three /healthz in a row, each
    on a new connection (so either worker may take it), answered within fast_ms."""
    deadline = time.monotonic() + limit
    fast = 0
    while fast < 3 and time.monotonic() < deadline:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=limit)
        started = time.perf_counter()
        try:
            conn.request("GET", "/healthz", headers={"Host": "127.0.0.1"})
            conn.getresponse().read()
        finally:
            conn.close()
        fast = fast + 1 if (time.perf_counter() - started) * 1000 < fast_ms else 0
        time.sleep(0.05)


def _have(program: str) -> bool:
    return any(Path(d, program).exists() for d in os.environ.get("PATH", "").split(os.pathsep))


# --- PostgreSQL backend CPU --------------------------------------------------------


class BackendCpu:
    """CPU seconds of the backends of some application_names, from /proc, sampled.

    Backends present when a phase starts count from their value then; backends
    that appear later count whole (their connection setup is part of the load);
    a backend that exits counts up to its last sample.
    """

    def __init__(self, apps: tuple[str, ...]) -> None:
        self.apps = list(apps)
        self.conn = psycopg.connect(
            f"{harness.SERVER}/postgres?application_name={MONITOR_APP}", autocommit=True
        )
        self.tick = os.sysconf("SC_CLK_TCK")
        self.lock = threading.Lock()
        self.base: dict[int, float] = {}
        self.last: dict[int, tuple[str, float]] = {}
        self.stop = threading.Event()
        self.thread: threading.Thread | None = None
        self.started = self.elapsed = 0.0

    def _backends(self) -> dict[int, str]:
        rows = self.conn.execute(
            "SELECT a.pid, coalesce(l.application_name, a.application_name) "
            "FROM pg_stat_activity a LEFT JOIN pg_stat_activity l ON l.pid = a.leader_pid "
            "WHERE a.datname LIKE %s "
            "AND coalesce(l.application_name, a.application_name) = ANY(%s)",
            [f"{BASE}%", self.apps],
        ).fetchall()
        return dict(rows)

    def _cpu(self, pid: int) -> float | None:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return None
        fields = stat.rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / self.tick  # utime + stime

    def _sample(self, *, first: bool = False) -> None:
        with self.lock:
            for pid, app in self._backends().items():
                cpu = self._cpu(pid)
                if cpu is None:
                    continue
                if pid not in self.base:
                    self.base[pid] = cpu if first else 0.0
                self.last[pid] = (app, cpu)

    def _loop(self) -> None:
        while not self.stop.wait(SAMPLE_EVERY):
            self._sample()

    def start(self) -> None:
        self.started = time.monotonic()
        self.base, self.last = {}, {}
        self._sample(first=True)
        self.stop.clear()
        self.thread = threading.Thread(target=self._loop, daemon=True, name="pg-cpu")
        self.thread.start()

    def finish(self) -> dict[str, tuple[float, int]]:
        """Per application_name: CPU seconds since start() and how many backends;
        ``self.elapsed`` is the wall time they were used in."""
        self.stop.set()
        if self.thread is not None:
            self.thread.join(timeout=10)
        self._sample()
        self.elapsed = time.monotonic() - self.started
        totals: dict[str, list[float]] = defaultdict(lambda: [0.0, 0])
        for pid, (app, cpu) in self.last.items():
            totals[app][0] += cpu - self.base[pid]
            totals[app][1] += 1
        return {app: (value[0], int(value[1])) for app, value in totals.items()}

    def close(self) -> None:
        self.stop.set()
        self.conn.close()


# --- The write stream (a separate process) -------------------------------------------


def _writer(env: dict[str, str], seconds: float, pipe: Any) -> None:
    """Spawned: Django on the clone, writes through the services at RATES, bounded."""
    harness.setup_django(env)
    from django.contrib.auth.models import User
    from django.db import connections

    from store.models import Order, Product
    from store.services.orders import order_cancel, order_mark_paid
    from store.services.stock import MAX_UNITS, stock_adjust, stock_set_optimistic

    actor = User.objects.get(username=OPERATOR)
    last_product = Product.objects.order_by("-pk").values_list("pk", flat=True).first() or 1
    need = {kind: int(rate * seconds) + 1 for kind, rate in RATES.items()}
    to_pay = iter(
        Order.objects.filter(paid=False, cancelled_at__isnull=True)
        .order_by("?")
        .values_list("pk", flat=True)[: need["pay"]]
    )
    to_cancel = iter(
        Order.objects.filter(paid=True, cancelled_at__isnull=True)
        .order_by("?")
        .values_list("pk", flat=True)[: need["cancel refunded"]]
    )
    connections.close_all()

    def price(rng: random.Random) -> None:
        pk = rng.randint(1, last_product)
        seen = Product.objects.only("stock", "price", "version").get(pk=pk)
        new_price = min(MAX_UNITS, max(99, round(seen.price * rng.uniform(0.9, 1.1))))
        stock_set_optimistic(
            product=pk,
            expected_version=seen.version,
            new_stock=seen.stock,
            new_price=new_price,
            actor=actor,
            reason="bench live price",
        )

    jobs: dict[str, Callable[[random.Random], Any]] = {
        "adjust": lambda rng: stock_adjust(
            product=rng.randint(1, last_product),
            delta=rng.choice((-1, 1)),
            actor=actor,
            reason="bench live",
        ),
        "adjust hot": lambda rng: stock_adjust(
            product=HOT_PRODUCT, delta=rng.choice((-1, 1)), actor=actor, reason="bench live hot"
        ),
        "pay": lambda rng: order_mark_paid(order=next(to_pay), actor=actor),
        "cancel refunded": lambda rng: order_cancel(
            order=next(to_cancel), actor=actor, reason="bench live", refunded=True
        ),
        "price": price,
    }
    pipe.send("ready")
    start_at = pipe.recv()
    end_at = start_at + seconds
    results: dict[str, dict[str, Any]] = {}
    lock = threading.Lock()

    def drive(kind: str, index: int, threads: int) -> None:
        rate = RATES[kind]
        rng = random.Random(f"{kind}:{index}")
        slot = start_at + index / rate
        interval = threads / rate
        done, late = 0, 0
        failed: Counter[str] = Counter()
        latencies: list[float] = []
        while slot < end_at:
            now = time.time()
            if slot > now:
                time.sleep(slot - now)
            elif now - slot > 1.0:  # more than a second behind: skip, never burst
                late += 1
                slot += interval
                continue
            started = time.perf_counter()
            try:
                jobs[kind](rng)
                done += 1
            except StopIteration:
                break
            except Exception as exc:  # refusals (limits, conflicts) are counted, not fatal
                failed[type(exc).__name__] += 1
            latencies.append((time.perf_counter() - started) * 1000)
            slot += interval
        connections.close_all()
        with lock:
            mine = results.setdefault(kind, {"done": 0, "late": 0, "failed": {}, "ms": []})
            mine["done"] += done
            mine["late"] += late
            mine["ms"] += latencies
            for name, count in failed.items():
                mine["failed"][name] = mine["failed"].get(name, 0) + count

    workers = []
    for kind, rate in RATES.items():
        threads = max(1, int(rate // 25))  # room for slow calls at 50/s
        workers += [
            threading.Thread(target=drive, args=(kind, i, threads), daemon=True)
            for i in range(threads)
        ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=seconds + 2 * REQUEST_TIMEOUT)
    pipe.send(results)


# --- gunicorn ----------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _with_app(url: str, app: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}application_name={app}"


@contextlib.contextmanager
def gunicorn(env: dict[str, str], log: Path) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    port = _free_port()
    shard_urls = env["DATABASE_SHARD_URLS"].split(",")
    web_env = (
        os.environ
        | env
        | {
            "DJANGO_SETTINGS_MODULE": "bench.settings",
            # The web workers' backends are told apart by this in pg_stat_activity.
            "DATABASE_URL": _with_app(env["DATABASE_URL"], WEB_APP),
            "DATABASE_SHARD_URLS": ",".join(_with_app(url, WEB_APP) for url in shard_urls),
            "REDIS_URL": harness.REDIS,
            "DEBUG": "false",
            "ALLOWED_HOSTS": "127.0.0.1",
            "STOREOPS_LOG_LEVEL": "WARNING",
        }
    )
    web_env.pop("STOREOPS_CONN_MAX_AGE", None)  # the default, as deployed
    web_env.pop("STOREOPS_STATEMENT_TIMEOUT", None)  # the web's own, not the bench's 0
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                *(sys.executable, "-m", "gunicorn", "config.wsgi"),
                *("--workers", "2", "--threads", "4", "--worker-class", "gthread"),
                *("--bind", f"127.0.0.1:{port}", "--graceful-timeout", "5"),
                *("--log-level", "warning"),
            ],
            cwd=harness.ROOT,
            env=web_env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stopped as a whole below
        )
    try:
        deadline = time.monotonic() + 60
        client = Client(port)
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"gunicorn exited:\n{log.read_text()[-3000:]}")
            with contextlib.suppress(OSError, http.client.HTTPException):
                if client.get("/healthz", {})[0] == 200 and len(worker_pids(proc.pid)) == 2:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"gunicorn did not answer in 60 s:\n{log.read_text()[-3000:]}")
            time.sleep(0.2)
        yield proc, port
    finally:
        _stop(proc)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=15)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # the group we started, whatever is left of it
    proc.wait(timeout=10)


def worker_pids(master: int) -> list[int]:
    try:
        children = Path(f"/proc/{master}/task/{master}/children").read_text()
    except OSError:
        return []
    return [int(pid) for pid in children.split()]


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


# --- In-process parts (Django on the clone) ----------------------------------------------


def _sessions(viewers: int) -> tuple[list[str], str]:
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


def _flush_redis() -> None:
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
            _flush_redis()
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


def warm_up(
    run: harness.Run, size: str, client: Client, cookies: list[str], panels: list[str]
) -> None:
    """Every viewer's dashboard once, unmeasured: the phases start from warm caches,
    as a console that has been open for a while does."""
    started = time.perf_counter()
    for cookie in cookies:
        for sample in [
            _fetch(client, "/", "/", cookie, hx=False),
            *(_fetch(client, name, f"/panels/{name}/", cookie, hx=True) for name in panels),
        ]:
            if sample.status != 200:
                raise RuntimeError(f"warm-up: {sample.endpoint} answered {sample.status}")
    run.note(
        f"{size}: warm-up (each viewer's dashboard once) {time.perf_counter() - started:.1f} s"
    )


def _start_writer(env: dict[str, str], seconds: float) -> tuple[Any, Any]:
    context = multiprocessing.get_context("spawn")
    ours, theirs = context.Pipe()
    writer_env = env | {
        "DATABASE_URL": _with_app(env["DATABASE_URL"], WRITES_APP),
        "REDIS_URL": harness.REDIS,
        "DJANGO_SETTINGS_MODULE": "config.settings",
    }
    proc = context.Process(target=_writer, args=(writer_env, seconds, theirs), daemon=True)
    proc.start()
    deadline = time.monotonic() + 300
    while not ours.poll(1):
        if not proc.is_alive() or time.monotonic() > deadline:
            proc.terminate()
            proc.join(timeout=10)
            raise RuntimeError(f"the write stream did not get ready (exit code {proc.exitcode})")
    if ours.recv() != "ready":
        raise RuntimeError("the write stream said something else than ready")
    return proc, ours


def _endpoint_figures(samples: list[Sample], endpoint: str) -> dict[str, float]:
    mine = [s for s in samples if s.endpoint == endpoint]
    ages = [s.age for s in mine if s.age is not None]
    return {
        "requests": len(mine),
        "failed": sum(1 for s in mine if s.status != 200),
        "p50": percentile([s.ms for s in mine], 50),
        "p99": percentile([s.ms for s in mine], 99),
        "age p50": percentile(ages, 50),
        "age p99": percentile(ages, 99),
        "aged": len(ages),
    }


def phase(
    run: harness.Run,
    size: str,
    name: str,
    *,
    env: dict[str, str],
    client: Client,
    cookies: list[str],
    panels: list[str],
    seconds: int,
    cpu: BackendCpu,
    writes: bool,
) -> dict[str, dict[str, float]]:
    writer = pipe = None
    try:
        if writes:
            writer, pipe = _start_writer(env, seconds + WRITE_LEAD)
            pipe.send(time.time() + 0.2)
            time.sleep(0.2 + WRITE_LEAD)
        cpu.start()
        samples, skipped = viewers_load(client, cookies, panels, seconds)
        used = cpu.finish()
        done = pipe.recv() if pipe is not None and pipe.poll(3 * REQUEST_TIMEOUT) else None
        if writes and done is None:
            raise RuntimeError("the write stream did not report")
    finally:
        if writer is not None:
            writer.join(timeout=10)
            if writer.is_alive():
                writer.terminate()
                writer.join(timeout=10)
    prefix = f"{size} {name}"
    figures = {}
    for endpoint in ["/", *panels]:
        f = _endpoint_figures(samples, endpoint)
        figures[endpoint] = f
        run.record(f"{prefix}: {endpoint} p50", f["p50"], unit="ms")
        run.record(f"{prefix}: {endpoint} p99", f["p99"], unit="ms")
        if f["aged"]:
            run.record(f"{prefix}: {endpoint} data age p50", f["age p50"], unit="s")
            run.record(f"{prefix}: {endpoint} data age p99", f["age p99"], unit="s")
    run.note(_table(prefix, figures))
    panel_samples = [s for s in samples if s.endpoint != "/"]
    if not any(s.age is not None for s in panel_samples):
        # A template change must not quietly turn every data age into "nan".
        raise RuntimeError(f"no panel response matched {COMPUTED_AT.pattern!r}")
    run.record(
        f"{prefix}: all panels p50", percentile([s.ms for s in panel_samples], 50), unit="ms"
    )
    run.record(
        f"{prefix}: all panels p99", percentile([s.ms for s in panel_samples], 99), unit="ms"
    )
    run.record(f"{prefix}: responses", len(samples), unit="n")
    failed = sum(1 for s in samples if s.status != 200)
    run.record(f"{prefix}: failed responses", failed, unit="n")
    run.record(f"{prefix}: skipped reloads", skipped, unit="n")
    run.record(f"{prefix}: responses asking for a repoll", sum(s.repoll for s in samples), unit="n")
    # Per wall second from the phase's start until its last response (late responses
    # to requests sent within the phase run past its end; their CPU belongs to it).
    web, backends = used.get(WEB_APP, (0.0, 0))
    run.record(f"{prefix}: wall time incl. late responses", cpu.elapsed, unit="s")
    run.record(f"{prefix}: PG CPU s/min, dashboard", web * 60 / cpu.elapsed, unit="s")
    run.record(f"{prefix}: PG CPU share of a core", web / cpu.elapsed, unit="core")
    notes = [f"{backends} web backends"]
    if writes and done is not None:
        writes_cpu, _ = used.get(WRITES_APP, (0.0, 0))
        run.record(f"{prefix}: PG CPU s/min, write stream", writes_cpu * 60 / cpu.elapsed, unit="s")
        for kind, result in done.items():
            run.record(
                f"{prefix}: achieved {kind}/s", result["done"] / (seconds + WRITE_LEAD), unit="/s"
            )
            run.record(f"{prefix}: target {kind}/s", RATES[kind], unit="/s")
            ms = result["ms"]
            run.record(f"{prefix}: write {kind} p50", percentile(ms, 50), unit="ms")
            run.record(f"{prefix}: write {kind} p99", percentile(ms, 99), unit="ms")
            if result["late"] or result["failed"]:
                notes.append(
                    f"{kind}: {result['late']} slots skipped late, refused {result['failed']}"
                )
            if result["done"] == 0:
                raise RuntimeError(f"the write stream did no {kind}: {result}")
    run.note(f"{prefix}: {len(samples):,} responses, {failed} failed; " + "; ".join(notes))
    return figures


def _table(prefix: str, figures: dict[str, dict[str, float]]) -> str:
    """The phase at a glance: one line per endpoint."""
    lines = [
        f"{prefix}:",
        f"  {'endpoint':<16} {'n':>5} {'failed':>6} {'p50 ms':>9} {'p99 ms':>9} "
        f"{'age p50 s':>9} {'age p99 s':>9}",
    ]
    for endpoint, f in figures.items():
        lines.append(
            f"  {endpoint:<16} {f['requests']:>5} {f['failed']:>6} {f['p50']:>9,.0f} "
            f"{f['p99']:>9,.0f} {f['age p50']:>9.1f} {f['age p99']:>9.1f}"
        )
    return "\n".join(lines)


def targets(run: harness.Run) -> None:
    for name, value, unit in (
        ("target: panel p99", PANEL_P99_MS, "ms"),
        ("target: / p99", INDEX_P99_MS, "ms"),
        ("target: data age p99", AGE_P99_S, "s"),
        ("target: PG CPU share", PG_CPU_SHARE, "core"),
        ("target: cold compute at 2m", COLD_MS, "ms"),
    ):
        run.record(name, value, unit=unit)


def compare(run: harness.Run, size: str, panels: list[str]) -> None:
    """Targets, and writes against no writes, for one size."""
    quiet, busy = f"{size} no-writes", f"{size} writes"
    for endpoint in ["/", *panels, "all panels"]:
        target = "target: / p99" if endpoint == "/" else "target: panel p99"
        if endpoint != "all panels":
            run.ratio(
                f"{busy}: {endpoint} p99 / target", f"{busy}: {endpoint} p99", target, at_most=1.0
            )
        for figure in ("p50", "p99", "data age p50", "data age p99"):
            a, b = f"{busy}: {endpoint} {figure}", f"{quiet}: {endpoint} {figure}"
            if a in run.measurements and b in run.measurements:
                run.ratio(f"{size}: {endpoint} {figure} writes / none", a, b)
        age = f"{busy}: {endpoint} data age p99"
        if age in run.measurements:
            run.ratio(
                f"{busy}: {endpoint} data age p99 / 5 s", age, "target: data age p99", at_most=1.0
            )
    for prefix in (quiet, busy):
        run.ratio(
            f"{prefix}: PG CPU / 15% of a core",
            f"{prefix}: PG CPU share of a core",
            "target: PG CPU share",
            at_most=1.0,
        )
    for kind in RATES:
        achieved = f"{busy}: achieved {kind}/s"
        if achieved in run.measurements:
            run.ratio(f"{busy}: achieved / target {kind}", achieved, f"{busy}: target {kind}/s")
    run.ratio(
        f"{size}: PG CPU writes / none",
        f"{busy}: PG CPU s/min, dashboard",
        f"{quiet}: PG CPU s/min, dashboard",
    )
    if size == "2m":
        for name in panels:
            run.ratio(
                f"2m cold {name} / 50 ms",
                f"2m cold compute: {name}",
                "target: cold compute at 2m",
                at_most=1.0,
            )


def growth(run: harness.Run, panels: list[str]) -> None:
    """8m against 2m, for everything measured at both sizes."""
    for name in panels:
        run.ratio(
            f"growth cold {name} 8m / 2m",
            f"8m cold compute: {name}",
            f"2m cold compute: {name}",
            at_most=COLD_GROWTH,
        )
    for phase_name in ("no-writes", "writes"):
        for endpoint in ["/", *panels, "all panels"]:
            for figure in ("p50", "p99", "data age p99"):
                a = f"8m {phase_name}: {endpoint} {figure}"
                b = f"2m {phase_name}: {endpoint} {figure}"
                if a in run.measurements and b in run.measurements:
                    run.ratio(f"growth {phase_name} {endpoint} {figure} 8m / 2m", a, b)
        run.ratio(
            f"growth {phase_name} PG CPU 8m / 2m",
            f"8m {phase_name}: PG CPU s/min, dashboard",
            f"2m {phase_name}: PG CPU s/min, dashboard",
        )


def one_size(
    run: harness.Run, size: str, *, seconds: int, viewers: int, http_seconds: int
) -> list[str]:
    with harness.cloned(BASE, size=size) as env:
        harness.setup_django(env | {"REDIS_URL": harness.REDIS})
        from django.contrib.contenttypes.models import ContentType
        from django.db import connection, connections

        from store.models import OrderItem, Product

        ContentType.objects.clear_cache()  # a second size's clone is a new database
        products = Product.objects.count()
        items = OrderItem.objects.count()
        run.note(
            f"{size}: {products:,} products, {items:,} order items; PostgreSQL "
            f"{connection.pg_version}; cache {harness.REDIS}"
        )
        cookies, operator = _sessions(viewers)
        panels = cold_compute(run, size)
        _flush_redis()
        connections.close_all()  # the clone is dropped with FORCE at the end anyway
        cpu = BackendCpu((WEB_APP, WRITES_APP))
        log = Path(tempfile.gettempdir()) / f"bench-live-gunicorn-{os.getpid()}.log"
        try:
            with gunicorn(env, log) as (proc, port):
                client = Client(port)
                http_ratios(run, size, port, cookies[0], http_seconds, client)
                export_ratio(run, size, port, operator, proc.pid, products, env["DATABASE_URL"])
                warm_up(run, size, client, cookies, panels)
                for name, writes in (("no-writes", False), ("writes", True)):
                    phase(
                        run,
                        size,
                        name,
                        env=env,
                        client=client,
                        cookies=cookies,
                        panels=panels,
                        seconds=seconds,
                        cpu=cpu,
                        writes=writes,
                    )
                workers = worker_pids(proc.pid)
                run.note(
                    f"{size}: gunicorn 2 workers x 4 threads (gthread), worker peak RSS "
                    + ", ".join(f"{peak_rss_mb(pid):.0f} MB" for pid in workers)
                )
            verify_rollups(run, size)
        finally:
            cpu.close()
            connections.close_all()
        return panels


def verify_rollups(run: harness.Run, size: str) -> None:
    """After the write stream: every rollup still equals its full scan."""
    from store.selectors.rollups import rollup_differences

    started = time.perf_counter()
    differences = rollup_differences()
    elapsed = time.perf_counter() - started
    run.record(f"{size} rollups verify: rows differing", float(len(differences)), unit="rows")
    verdict = (
        "clean" if not differences else "DIFFERENCES: " + "; ".join(str(d) for d in differences[:5])
    )
    run.note(f"{size}: rollups verify after the write stream ({elapsed:.0f} s): {verdict}")


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def run(
    run: harness.Run,
    *,
    reps: int | None,
    size: str = "2m",
    seconds: int = 120,
    viewers: int = 20,
    http_seconds: int = 8,
) -> None:
    if not 1 <= seconds <= 600 or not 1 <= viewers <= 100 or not 1 <= http_seconds <= 60:
        raise SystemExit(
            "bounded runs only: --seconds 1..600, --viewers 1..100, --http-seconds 1..60"
        )
    # Ctrl-C (even when started in the background, where SIGINT is inherited as
    # ignored) and a plain `kill` unwind alike: gunicorn, the writer and the clone go.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _interrupt)
    targets(run)
    sizes = ["2m", "8m"] if size == "both" else [size]
    run.note(
        f"{viewers} viewers reloading every {PERIOD:g} s, {seconds} s per phase; writes "
        + ", ".join(f"{kind} {rate:g}/s" for kind, rate in RATES.items())
        + f"; HTTP ratios {HTTP_REPS} x {http_seconds} s each, "
        + ("wrk -t2 -c8" if _have("wrk") else "threaded client, 8 connections")
    )
    panels: list[str] = []
    for one in sizes:
        panels = one_size(run, one, seconds=seconds, viewers=viewers, http_seconds=http_seconds)
        compare(run, one, panels)
    if len(sizes) == 2:
        growth(run, panels)
