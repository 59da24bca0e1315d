"""``bench live``'s write stream: a separate process writing through the services at
fixed rates, bounded in time (slots more than a second late are skipped, never burst)."""

from __future__ import annotations

import multiprocessing
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from bench import harness
from bench.load import REQUEST_TIMEOUT
from bench.webserver import with_app

WRITES_APP = "storeops-bench-writes"
OPERATOR = "bench-live-operator"
# Writes per second through the services, as in the issue.
RATES = {"adjust": 50.0, "adjust hot": 5.0, "pay": 5.0, "cancel refunded": 1.0, "price": 1.0}
HOT_PRODUCT = 1


def _write(env: dict[str, str], seconds: float, pipe: Any) -> None:
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


def start(env: dict[str, str], seconds: float) -> tuple[Any, Any]:
    context = multiprocessing.get_context("spawn")
    ours, theirs = context.Pipe()
    writer_env = env | {
        "DATABASE_URL": with_app(env["DATABASE_URL"], WRITES_APP),
        "REDIS_URL": harness.REDIS,
        "DJANGO_SETTINGS_MODULE": "config.settings",
    }
    proc = context.Process(target=_write, args=(writer_env, seconds, theirs), daemon=True)
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
