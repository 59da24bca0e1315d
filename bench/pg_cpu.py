"""PostgreSQL CPU seconds of the backends of some application_names, from /proc."""

from __future__ import annotations

import os
import threading
import time
from collections import defaultdict
from pathlib import Path

import psycopg

from bench import harness

MONITOR_APP = "storeops-bench-monitor"
SAMPLE_EVERY = 0.5


class BackendCpu:
    """CPU seconds of the backends of some application_names, from /proc, sampled.

    Backends present when a phase starts count from their value then; backends
    that appear later count whole (their connection setup is part of the load);
    a backend that exits counts up to its last sample.
    """

    def __init__(self, apps: tuple[str, ...], databases: str) -> None:
        self.apps = list(apps)
        self.databases = databases  # a name prefix: the clone and its shards
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
            [f"{self.databases}%", self.apps],
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
