"""The viewers' side of ``bench live``: a keep-alive HTTP client, browsers reloading
the dashboard (and re-asking for a panel that says so, as console.js does), and
requests/s of one URL (wrk, or a threaded client when wrk is missing)."""

from __future__ import annotations

import http.client
import os
import re
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

PERIOD = 5.0  # each viewer reloads the dashboard this often
REQUEST_TIMEOUT = 60.0
BROWSER_CONNECTIONS = 6  # per viewer, as browsers do for HTTP/1.1
IDLE_RECONNECT = 1.5  # below gunicorn's 2 s keep-alive: never reuse a socket it may close
REPOLL = b"data-repoll"  # console.js fetches such a panel again after REPOLL_DELAY
REPOLL_DELAY = 1.0
COMPUTED_AT = re.compile(rb'data-computed-at="([^"]+)"')  # the panel's "updated" badge


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))  # ceil
    return ordered[int(rank) - 1]


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
    sent: float = 0.0  # time.monotonic() when the request left: a phase's timeline


def fetch(client: Client, endpoint: str, path: str, cookie: str, hx: bool) -> Sample:
    headers = {"Cookie": cookie}
    if hx:
        headers |= {"HX-Request": "true", "HX-Current-URL": "http://127.0.0.1/"}
    sent, started = time.monotonic(), time.perf_counter()
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
    return Sample(endpoint, ms, age, status, repoll=REPOLL in body, sent=sent)


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
        keep(fetch(client, "/", "/", cookie, hx=False))

        def load(name: str) -> None:
            # Like console.js: a panel served stale while its refresh runs is fetched
            # again a second later (those requests are load too).
            while True:
                sample = fetch(client, name, f"/panels/{name}/", cookie, True)
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
    if have("wrk"):
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


def have(program: str) -> bool:
    return any(Path(d, program).exists() for d in os.environ.get("PATH", "").split(os.pathsep))
