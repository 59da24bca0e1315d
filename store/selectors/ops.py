"""The last hour of operational figures, from the samples the probes record."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime

from store.samples import WINDOW_S, samples_recent

BUCKET_S = 60  # one point per minute: 60 points per series


@dataclass(frozen=True)
class OpsSeries:
    """Per minute of the last hour, the highest value sampled in it (None: no sample)."""

    minutes: list[datetime]
    backlog: list[float | None]
    latency: dict[str, list[float | None]]  # database alias -> latency (ms)
    lag: dict[str, list[float | None]]  # replica alias -> lag (s)
    samples: int


def _per_minute(
    samples: list[tuple[float, dict[str, float | None]]], start: float
) -> dict[str, list[float | None]]:
    found: dict[str, list[float | None]] = {}
    buckets = WINDOW_S // BUCKET_S
    for at, values in samples:
        i = int((at - start) // BUCKET_S)
        if not 0 <= i < buckets:
            continue
        for name, value in values.items():
            column = found.setdefault(name, [None] * buckets)
            if value is not None:
                current = column[i]
                column[i] = value if current is None else max(current, value)
    return found


def ops_series(*, now: float | None = None) -> OpsSeries:
    """No query: reads the bounded samples from the cache."""
    now = time.time() if now is None else now
    start = (now // BUCKET_S + 1) * BUCKET_S - WINDOW_S
    databases = samples_recent("databases", now=now)
    outbox = samples_recent("outbox", now=now)
    db = _per_minute(databases, start)
    backlog = _per_minute(outbox, start).get("backlog", [None] * (WINDOW_S // BUCKET_S))
    minutes = [
        datetime.fromtimestamp(start + i * BUCKET_S, tz=UTC) for i in range(WINDOW_S // BUCKET_S)
    ]
    return OpsSeries(
        minutes=minutes,
        backlog=backlog,
        latency={k.split(":", 1)[1]: v for k, v in sorted(db.items()) if k.startswith("latency:")},
        lag={k.split(":", 1)[1]: v for k, v in sorted(db.items()) if k.startswith("lag:")},
        samples=len(databases) + len(outbox),
    )
