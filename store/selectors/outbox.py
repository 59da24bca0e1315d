"""Outbox health for the console's outbox panel: backlog, age, failures, dead letters."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from django.db.models import Count, Min, Q
from django.utils import timezone

from store.models import OutboxEvent


@dataclass(frozen=True)
class OutboxStats:
    backlog: int
    failing: int
    dead_letters: int
    oldest_pending_age_seconds: float | None
    recent_dead_letters: list[OutboxEvent]


def outbox_stats(*, now: datetime | None = None, dead_letter_limit: int = 10) -> OutboxStats:
    """Two queries whatever the outbox size: one aggregate, one short list."""
    now = now or timezone.now()
    pending = Q(published_at__isnull=True, dead_lettered_at__isnull=True)
    totals = OutboxEvent.objects.aggregate(
        backlog=Count("pk", filter=pending),
        failing=Count("pk", filter=pending & Q(attempts__gt=0)),
        dead=Count("pk", filter=Q(dead_lettered_at__isnull=False)),
        oldest=Min("created_at", filter=pending),
    )
    recent = list(
        OutboxEvent.objects.filter(dead_lettered_at__isnull=False)
        .only("id", "topic", "key", "attempts", "last_error", "dead_lettered_at", "created_at")
        .order_by("-dead_lettered_at")[:dead_letter_limit]
    )
    oldest = totals["oldest"]
    return OutboxStats(
        backlog=totals["backlog"],
        failing=totals["failing"],
        dead_letters=totals["dead"],
        oldest_pending_age_seconds=(now - oldest).total_seconds() if oldest else None,
        recent_dead_letters=recent,
    )
