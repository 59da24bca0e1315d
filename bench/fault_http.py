"""The faults bench's HTTP side: one request at a time on a fresh connection (hostile
values sent as raw bytes), round-robin load, a tally of every answer, and the checks
the run reports as met or MISSED."""

from __future__ import annotations

import http.client
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from urllib.parse import quote

from bench import harness


@dataclass
class Answer:
    path: str
    status: int  # 0: no answer (connection error or client timeout)
    seconds: float
    body: bytes = b""


@dataclass
class Tally:
    sent: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    past_deadline: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, answer: Answer, deadline: float) -> None:
        with self.lock:
            self.sent += 1
            self.statuses[answer.status] += 1
            if answer.seconds > deadline:
                self.past_deadline.append(f"{answer.path} {answer.seconds:.1f}s")

    @property
    def server_errors(self) -> int:
        return sum(n for status, n in self.statuses.items() if status >= 500 or status == 0)


TALLY = Tally()
CLIENT_TIMEOUT = 40.0


def request(
    port: int,
    path: str,
    *,
    method: str = "GET",
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
    deadline: float = 10.0,
    count: bool = True,
) -> Answer:
    started = time.monotonic()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=CLIENT_TIMEOUT)
    # Hostile values travel as raw UTF-8 bytes, as a hostile client would send them.
    path = quote(path, safe="/?=&%:;,+-_.~'[]{}()!*$@", errors="surrogatepass")
    raw = {
        k: v.encode("utf-8", "surrogatepass").decode("latin-1") for k, v in (headers or {}).items()
    }
    try:
        conn.request(method, path, body=body, headers={"Host": "127.0.0.1", **raw})
        response = conn.getresponse()
        answer = Answer(path, response.status, 0.0, response.read())
    except (OSError, http.client.HTTPException):
        answer = Answer(path, 0, 0.0)
    finally:
        conn.close()
    answer.seconds = time.monotonic() - started
    if count:
        TALLY.add(answer, deadline)
    return answer


def load(
    port: int,
    targets: list[tuple[str, dict[str, str]]],
    seconds: float,
    *,
    threads: int = 3,
    deadline: float = 10.0,
) -> list[Answer]:
    """Request ``targets`` round-robin from ``threads`` threads for ``seconds``."""
    stop = time.monotonic() + seconds
    answers: list[Answer] = []

    def loop(offset: int) -> None:
        n = offset
        while time.monotonic() < stop:
            path, headers = targets[n % len(targets)]
            answers.append(request(port, path, headers=headers, deadline=deadline))
            n += threads

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(loop, range(threads)))
    return answers


CHECKS: list[tuple[str, bool]] = []


def check(run: harness.Run, name: str, ok: bool) -> None:
    CHECKS.append((name, ok))
    run.note(f"{'met' if ok else 'MISSED'}: {name}")
