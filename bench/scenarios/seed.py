"""Seeding throughput: the 1M-product data set into fresh, empty PostgreSQL databases.

Runs ``manage.py seed_demo`` in a child process so its peak RSS can be read from
``RUSAGE_CHILDREN``; targets from the foundation issue: under 120 s in total and
bounded memory (we hold the line at 200 MB).
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import time

import psycopg

from bench import harness

BASE = "storeops_bench_seed"
TABLES = ["store_product", "store_order", "store_orderitem"]


def _seed_once() -> tuple[float, int, float]:
    env = os.environ | harness.create_empty(BASE)
    args = [f"--{key}={value}" for key, value in harness.TEMPLATE_PLAN.items()]
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "manage.py", "seed_demo", "--no-progress", *args],
        cwd=harness.ROOT,
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    elapsed = time.perf_counter() - started
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    rows = 0
    for name in harness.database_names(BASE):
        with psycopg.connect(f"{harness.SERVER}/{name}") as conn:
            for table in (
                "store_shop",
                "store_category",
                *TABLES,
                "store_customerprofile",
                "store_customerevent",
            ):
                found = conn.execute("SELECT to_regclass(%s)", [table]).fetchone()
                if found and found[0]:
                    rows += conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
    # ru_maxrss is the largest child so far; a later, smaller child cannot lower it.
    return elapsed, rows, max(peak_kib, before) / 1024


def run(run: harness.Run, *, reps: int | None) -> None:
    totals, rates, peaks = [], [], []
    try:
        for _ in range(reps or 1):
            elapsed, rows, peak_mb = _seed_once()
            totals.append(elapsed)
            rates.append(rows / elapsed)
            peaks.append(peak_mb)
    finally:
        harness.drop_databases(BASE)
    run.record("seed total (1M products, ~2M items)", totals, unit="s")
    run.record("seed rows per second (all tables)", rates, unit="rows/s")
    run.record("seed peak RSS (child process)", peaks, unit="MB")
    run.record("target: total seconds", 120.0, unit="s")
    run.record("target: peak RSS", 200.0, unit="MB")
    run.ratio(
        "seed total / 120 s target",
        "seed total (1M products, ~2M items)",
        "target: total seconds",
        at_most=1.0,
    )
    run.ratio(
        "seed peak RSS / 200 MB bound",
        "seed peak RSS (child process)",
        "target: peak RSS",
        at_most=1.0,
    )
    run.note(f"rows: {rows:,} per run; plan {harness.TEMPLATE_PLAN}")
