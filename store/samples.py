"""Bounded recent samples of health figures, for the dashboard's last-hour charts.

Nothing extra is probed for them: the health snapshot (shard-health panel,
``/readyz``) and the outbox panel record what they have just measured. A series
keeps at most one sample per ``MIN_GAP_S`` seconds and only the last hour, so it
never holds more than ``MAX_SAMPLES`` entries, in the shared cache (Redis in
production, so every worker's probes feed one series). Read-modify-write without a
lock: two workers recording at once may lose one sample, which a chart can spare.
"""

from __future__ import annotations

import time

from django.core.cache import cache

WINDOW_S = 3600
MIN_GAP_S = 5.0
MAX_SAMPLES = int(WINDOW_S / MIN_GAP_S)
Sample = tuple[float, dict[str, float | None]]


def _key(series: str) -> str:
    return f"samples:1:{series}"


def sample_record(series: str, values: dict[str, float | None], *, at: float | None = None) -> None:
    at = time.time() if at is None else at
    samples: list[Sample] = cache.get(_key(series)) or []
    if samples and at - samples[-1][0] < MIN_GAP_S:
        return
    samples = [s for s in samples if s[0] > at - WINDOW_S][-(MAX_SAMPLES - 1) :]
    samples.append((at, values))
    cache.set(_key(series), samples, timeout=WINDOW_S)


def samples_recent(series: str, *, now: float | None = None) -> list[Sample]:
    now = time.time() if now is None else now
    return [s for s in cache.get(_key(series)) or [] if s[0] > now - WINDOW_S]
