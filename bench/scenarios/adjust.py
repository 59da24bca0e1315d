"""Locked stock adjustments per second through the service layer, next to pgbench.

``stock_adjust`` (row lock, conditional stock update, ledger row, outbox event, cache
bump on commit) runs in C forked client processes, each with its own connection, on
one hot product and on 1,000 distinct products, for C in 1, 4 and 16. In the same
run and on the same server, pgbench measures a hot-row UPDATE of the same product
row (the floor any locked adjustment pays; pgbench's default simple protocol, and
prepared for context), the service's own statement prepared (as the service sends it)
and pgbench's built-in simple-update. Target from the issue: the service's hot-row
rate >= 50% of pgbench's hot-row rate.
"""

from __future__ import annotations

import multiprocessing
import random
import re
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg
from psycopg import sql

from bench import harness

BASE = "storeops_bench_adjust"
PGBENCH_DB = "storeops_bench_adjust_pgbench"
CLIENTS = (1, 4, 16)
SECONDS = 4.0
DISTINCT = 1_000
TPS = re.compile(r"tps = ([\d.]+) \(without initial connection time\)")


def _client(args: tuple[str, list[int], float, float, int]) -> int:
    """One forked client: adjust until the shared end time; returns how many applied."""
    mode, product_ids, start_at, end_at, seed = args
    from django.db import connection

    from store.services.stock import stock_adjust

    # One adjustment before the clock starts, as pgbench reports its rate "without
    # initial connection time": it connects to PostgreSQL and Redis, prepares the
    # statement and imports what the first call needs (up to 0.4 s per forked client
    # at 16 clients, a tenth of the measured 4 s).
    stock_adjust(product=product_ids[0], delta=1, actor=None, reason="bench warm-up")
    rng = random.Random(seed)
    while time.time() < start_at:
        time.sleep(0.001)
    done = 0
    while time.time() < end_at:
        pk = product_ids[0] if mode == "hot" else rng.choice(product_ids)
        stock_adjust(product=pk, delta=1, actor=None, reason="bench")
        done += 1
    connection.close()
    return done


def _service_rate(mode: str, clients: int, product_ids: list[int]) -> float:
    from django.db import connections

    connections.close_all()  # a forked child must never share the parent's socket
    start_at = time.time() + 1.0 + 0.25 * clients  # every process forked and connected first
    end_at = start_at + SECONDS
    work = [(mode, product_ids, start_at, end_at, seed) for seed in range(clients)]
    with multiprocessing.get_context("fork").Pool(clients) as pool:
        done = sum(pool.map(_client, work))
    return done / SECONDS


def _pgbench(url: str, clients: int, *args: str) -> float:
    out = subprocess.run(
        [
            "pgbench",
            "-n",
            "-c",
            str(clients),
            "-j",
            str(min(clients, 4)),
            "-T",
            str(int(SECONDS)),
            *args,
            url,
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    found = TPS.search(out)
    if not found:
        raise RuntimeError(f"pgbench printed no tps:\n{out}")
    return float(found.group(1))


def _hot_row(url: str, clients: int, hot: int, script: Path, *mode: str) -> float:
    """pgbench running ``script`` against the hot product's row."""
    return _pgbench(url, clients, *mode, "-f", str(script), "-D", f"hot={hot}")


def _statement_script() -> str:
    """The service's own adjustment statement as a pgbench script: the SQL floor."""
    from store.services.stock import _ADJUST_SQL, MAX_UNITS

    values = {
        "pk": ":hot",
        "delta": "1",
        "max": str(MAX_UNITS),
        "reason": "'bench'",
        "method": "'adjust'",
        "actor": "NULL",
        "key": "''",
        "low": "5",
        "slots": "8",
        "event_id": "gen_random_uuid()",
    }
    sql_text = _ADJUST_SQL
    for name, value in values.items():
        sql_text = sql_text.replace(f"%({name})s", value)
    return " ".join(sql_text.split()) + ";\n"


def _pgbench_database() -> str:
    url = f"{harness.SERVER}/{PGBENCH_DB}"
    with psycopg.connect(f"{harness.SERVER}/postgres", autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(PGBENCH_DB)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(PGBENCH_DB)))
    subprocess.run(["pgbench", "-i", "-q", "-s", "10", url], check=True, capture_output=True)
    return url


def run(run: harness.Run, *, reps: int | None) -> None:
    reps = reps or 3
    with harness.cloned(BASE) as env:
        # Redis, as deployed: every adjustment's cache bump is a round trip to it.
        harness.setup_django(env | {"REDIS_URL": harness.REDIS})
        from store.models import Product
        from store.services import stock  # noqa: F401  (imported once, before forking)

        product_ids = list(Product.objects.order_by("pk").values_list("pk", flat=True)[:DISTINCT])
        hot = product_ids[0]
        store_url = env["DATABASE_URL"]
        pgbench_url = _pgbench_database()
        try:
            with tempfile.TemporaryDirectory() as tmp:
                script = Path(tmp) / "hot.sql"
                script.write_text("UPDATE store_product SET stock = stock + 1 WHERE id = :hot;\n")
                statement = Path(tmp) / "statement.sql"
                statement.write_text(_statement_script())
                for clients in CLIENTS:
                    rates: dict[str, list[float]] = {
                        "pgbench hot-row": [],
                        "pgbench hot-row prepared": [],
                        "pgbench service statement hot": [],
                        "service hot": [],
                        "pgbench simple-update": [],
                        "service 1000 products": [],
                    }
                    # Interleaved so machine noise hits the service and pgbench alike.
                    for _ in range(reps):
                        rates["pgbench hot-row"].append(_hot_row(store_url, clients, hot, script))
                        # Prepared, as the service sends it (PREPARE once, then EXECUTE).
                        rates["pgbench service statement hot"].append(
                            _hot_row(store_url, clients, hot, statement, "-M", "prepared")
                        )
                        rates["pgbench hot-row prepared"].append(
                            _hot_row(store_url, clients, hot, script, "-M", "prepared")
                        )
                        rates["service hot"].append(_service_rate("hot", clients, product_ids))
                        rates["pgbench simple-update"].append(
                            _pgbench(pgbench_url, clients, "-b", "simple-update")
                        )
                        rates["service 1000 products"].append(
                            _service_rate("distinct", clients, product_ids)
                        )
                    for name, samples in rates.items():
                        run.record(f"{name} c={clients}", samples, unit="tx/s")
                    run.ratio(
                        f"service/pgbench hot-row c={clients}",
                        f"service hot c={clients}",
                        f"pgbench hot-row c={clients}",
                        at_least=0.5,
                    )
                    run.ratio(
                        f"service/pgbench hot-row prepared c={clients}",
                        f"service hot c={clients}",
                        f"pgbench hot-row prepared c={clients}",
                    )
                    run.ratio(
                        f"service/its own SQL in pgbench c={clients}",
                        f"service hot c={clients}",
                        f"pgbench service statement hot c={clients}",
                    )
                    run.ratio(
                        f"service 1000/pgbench simple-update c={clients}",
                        f"service 1000 products c={clients}",
                        f"pgbench simple-update c={clients}",
                    )
        finally:
            with psycopg.connect(f"{harness.SERVER}/postgres", autocommit=True) as conn:
                conn.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                        sql.Identifier(PGBENCH_DB)
                    )
                )
        with psycopg.connect(store_url) as conn:
            ledger = conn.execute(
                "SELECT count(*) FROM store_stockmovement WHERE reason = 'bench'"
            ).fetchone()
        run.note(
            f"{SECONDS:g} s per measurement, {reps} interleaved reps; clients are forked "
            f"processes with one connection each; {ledger[0] if ledger else 0:,} ledger rows "
            "written by the service runs (each adjustment: lock, update, ledger row, "
            "outbox event). Data: the 1M-product template clone."
        )
