"""The faults bench's fuzz phase: thousands of hostile requests (bad ids, parameters,
headers and bodies) from several logged-in users; none may answer 5xx or show another
user's name."""

from __future__ import annotations

import random
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

from bench import harness
from bench.fault_http import TALLY, check, request

# The panels a fuzzed request may name (and junk that names none).
PANELS = [
    "category-stats",
    "category-groups",
    "rank-window",
    "low-stock",
    "trending",
    "shop-activity",
    "shard-health",
    "outbox",
]
JUNK = [
    "",
    "0",
    "-1",
    "18446744073709551616",
    "9" * 40,
    "1e309",
    "NaN",
    "%00",
    "\u202e\u0000",
    "' OR 1=1 --",
    "<script>x</script>",
    '=HYPERLINK("x")',
    "a" * 3000,
    "\ud800",
    "[]",
    "{}",
    "../../etc/passwd",
    "1,2,3",
    "true",
    "2026-13-45",
    "0x10",
    " 5 ",
    "+5",
    "5.5",
    "\uff11\uff12",
]


def _fuzz_one(
    rng: random.Random,
    port: int,
    cookies: dict[str, str],
    ids: dict[str, list[int]],
    seen: list[tuple[str, bytes]],
) -> None:
    who = rng.choice([*cookies, "anonymous"])
    cookie = cookies.get(who, "")
    csrf = "a" * 32
    headers: dict[str, str] = {}
    if cookie:
        headers["Cookie"] = f"{cookie}; csrftoken={csrf}"
    junk = rng.choice(JUNK)
    pk = rng.choice([*ids["product"], *ids["order"], 0, 2**63, 18446744073709551616])
    kind = rng.random()
    method = "GET"
    body = None
    if kind < 0.35:
        name = rng.choice([*PANELS, "nope", junk])
        param = rng.choice(["range", "threshold", "limit", "shop", "category", "sort", "by"])
        path = f"/panels/{name}/?{param}={junk}"
        headers |= {
            "HX-Request": "true",
            "HX-Trigger": f"{name}-controls",
            "HX-Target": f"panel-{name}",
        }
        if rng.random() < 0.5:
            headers["HX-Current-URL"] = rng.choice(
                ["http://[::1", "http://127.0.0.1/?x=%zz", junk or "x", "http://127.0.0.1:99999/"]
            )
    elif kind < 0.55:
        base = rng.choice(["/products/", "/orders/", "/stock/ledger/", "/"])
        param = rng.choice(
            ["page", "per_page", "sort", "q", "shop", "category", "_export", "status", "min_price"]
        )
        path = f"{base}?{param}={junk}"
        if rng.random() < 0.1:
            path = f"{base}?_export={rng.choice(['csv', 'json', 'xlsx'])}&per_page=5"
    elif kind < 0.65:
        path = rng.choice(
            [
                f"/customers/{rng.choice([*ids['customer'], pk])}/",
                "/readyz",
                "/healthz",
                "/api/trending.json",
                f"/inspector/{junk or 'x'}/",
                "/accounts/login/",
                "/admin/",
            ]
        )
    else:
        method = "POST"
        target = rng.random()
        key = uuid.uuid4().hex
        if target < 0.5:
            pid = rng.choice(ids["product"])
            path = f"/products/{pid}/adjust/"
            form = {
                "delta": rng.choice(["1", "-1", "2", junk]),
                "reason": rng.choice(["fuzz", junk]),
                "idempotency_key": key,
            }
        elif target < 0.7:
            path = f"/orders/{rng.choice(ids['order'])}/pay/"
            form = {"idempotency_key": rng.choice([key, junk])}
        elif target < 0.8:
            path = "/products/prices/"
            form = {"shop": junk, "category": junk, "percent": junk, "idempotency_key": key}
        else:
            path = rng.choice(
                ["/accounts/login/", f"/products/{pk}/edit/", f"/orders/{pk}/cancel/"]
            )
            form = {
                "username": junk,
                "password": junk,
                "stock": junk,
                "version": junk,
                "idempotency_key": key,
            }
        from urllib.parse import urlencode

        body = urlencode(form, encoding="utf-8", errors="surrogatepass").encode()
        ctype = "application/x-www-form-urlencoded"
        if rng.random() < 0.1:
            ctype += "; charset=utf-16"
        elif rng.random() < 0.05:
            ctype = "multipart/form-data; boundary=broken"
        headers |= {"Content-Type": ctype, "X-CSRFToken": csrf, "HX-Request": "true"}
        if rng.random() < 0.3:
            headers.pop("X-CSRFToken")
    answer = request(port, path, method=method, headers=headers, body=body, deadline=10)
    if method == "POST" and path.endswith("/adjust/") and rng.random() < 0.3:
        # The same submission again (a double click, a retry): one effect only.
        request(port, path, method=method, headers=headers, body=body, deadline=10)
    if cookie and answer.status == 200:
        seen.append((who, answer.body))


def phase_fuzz(run: harness.Run, port: int, cookies: dict[str, str], count: int, seed: int) -> None:
    from store.models import Order, Product

    ids = {
        "product": list(
            Product.objects.using("default").order_by("pk").values_list("pk", flat=True)[:50]
        ),
        "order": list(
            Order.objects.using("default").order_by("pk").values_list("pk", flat=True)[:50]
        ),
        "customer": list(range(1, 30)),
    }
    before = TALLY.sent
    errors_before = TALLY.server_errors
    seen: list[tuple[str, bytes]] = []
    started = time.monotonic()
    with ThreadPoolExecutor(4) as pool:
        list(
            pool.map(
                lambda n: _fuzz_one(random.Random(seed * 100_000 + n), port, cookies, ids, seen),
                range(count),
            )
        )
    sent = TALLY.sent - before
    errors = TALLY.server_errors - errors_before
    leaks = sum(
        1
        for who, body in seen
        for other in cookies
        if other != who and f"{other} <span".encode() in body
    )
    shown = sum(1 for who, body in seen if f"{who} <span".encode() in body)
    run.record("fuzz: requests sent", sent, unit="n")
    run.record("fuzz: 5xx", errors, unit="n")
    run.record("fuzz: responses showing another user", leaks, unit="n")
    run.note(
        f"fuzz: {sent} requests in {time.monotonic() - started:.0f} s, {errors} 5xx; "
        f"{len(seen)} logged-in 200s checked for other users' names ({shown} show their "
        f"own), {leaks} leaks"
    )
    check(run, "0 5xx over >= 3,000 fuzzed requests", errors == 0 and sent >= 3000)
    check(run, "no cross-user fragment", leaks == 0)
