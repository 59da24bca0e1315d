"""Cross-shard customer reads: scatter-gather over every shard, partial when one fails."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Generic, TypeVar

from django.db.models import Count
from django.utils import timezone

from store.models import CustomerEvent, CustomerProfile
from store.sharding import scatter_gather, shard_for_user

T = TypeVar("T")


@dataclass(frozen=True)
class TopCustomer:
    user_id: int
    name: str
    lifetime_value: int  # cents
    shard: str


@dataclass(frozen=True)
class CrossShard(Generic[T]):
    """What the shards that answered said; ``failed`` names those that did not."""

    value: T
    failed: dict[str, str] = field(default_factory=dict)

    @property
    def partial(self) -> bool:
        return bool(self.failed)


def _top_on(alias: str, limit: int) -> list[TopCustomer]:
    rows = (
        CustomerProfile.objects.using(alias)
        .order_by("-lifetime_value", "user_id")
        .values_list("user_id", "name", "lifetime_value")[:limit]
    )
    return [TopCustomer(uid, name, value, alias) for uid, name, value in rows]


def _merge_top(per_shard: list[list[TopCustomer]], limit: int) -> list[TopCustomer]:
    merged = [row for rows in per_shard for row in rows]
    merged.sort(key=lambda row: (-row.lifetime_value, row.user_id))
    return merged[:limit]


def _events_on(alias: str, since: datetime) -> dict[str, int]:
    rows = (
        CustomerEvent.objects.using(alias)
        .filter(created_at__gte=since)
        .order_by()
        .values_list("kind")
        .annotate(n=Count("pk"))
    )
    return dict(rows)


def _sum_events(per_shard: list[dict[str, int]]) -> dict[str, int]:
    totals: dict[str, int] = {}
    for counts in per_shard:
        for kind, n in counts.items():
            totals[kind] = totals.get(kind, 0) + n
    return dict(sorted(totals.items()))


def top_customers_by_lifetime_value(*, limit: int = 10) -> CrossShard[list[TopCustomer]]:
    """The global top ``limit``: each shard's own top ``limit``, merged (one query per shard)."""
    gathered = scatter_gather(lambda alias: _top_on(alias, limit))
    return CrossShard(_merge_top(list(gathered.results.values()), limit), gathered.failed)


def customer_events_last_hour(*, now: datetime | None = None) -> CrossShard[dict[str, int]]:
    """Events per kind in the last hour, summed over the shards (one query per shard)."""
    since = (now or timezone.now()) - timedelta(hours=1)
    gathered = scatter_gather(lambda alias: _events_on(alias, since))
    return CrossShard(_sum_events(list(gathered.results.values())), gathered.failed)


def customer_figures(
    *, limit: int = 5
) -> tuple[CrossShard[list[TopCustomer]], CrossShard[dict[str, int]]]:
    """Both of the above in one scatter-gather: one connection per shard, not two."""
    since = timezone.now() - timedelta(hours=1)
    gathered = scatter_gather(lambda alias: (_top_on(alias, limit), _events_on(alias, since)))
    results = list(gathered.results.values())
    return (
        CrossShard(_merge_top([top for top, _ in results], limit), gathered.failed),
        CrossShard(_sum_events([events for _, events in results]), gathered.failed),
    )


@dataclass(frozen=True)
class CustomerView:
    profile: CustomerProfile
    shard: str
    recent_events: list[CustomerEvent]


def customer_view(*, user_id: int, events: int = 20) -> CustomerView | None:
    """A customer and their latest events: two queries, both on the owning shard only.

    A shard that does not answer raises ``DatabaseError``: only this customer's page
    is affected, never another shard's customers.
    """
    profile = customer_profile(user_id=user_id)
    if profile is None:
        return None
    alias = profile._state.db or shard_for_user(user_id)
    recent = list(
        CustomerEvent.objects.using(alias).filter(user_id=user_id).order_by("-created_at")[:events]
    )
    return CustomerView(profile=profile, shard=alias, recent_events=recent)


def customer_profile(*, user_id: int) -> CustomerProfile | None:
    """One customer, read from the shard that owns them (other shards are not touched)."""
    return CustomerProfile.objects.for_user(user_id).first()
