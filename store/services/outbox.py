"""The transactional outbox: enqueue inside the change's transaction, relay afterwards.

Delivery is at least once: an event may be published again after a relay crash, so
every event carries its unique id for consumers to deduplicate. Events sharing a
``key`` (``product:42``) are published in creation order: only the oldest pending
event of a key is ever a claim candidate, and a relay claims its followers with it.
All times come from the database clock (``Now()``), so relays on hosts with skewed
clocks agree on leases and back-off.

Cost: a claim scans pending events in ``available_at`` order until it has a batch of
heads, probing ``outbox_pending_key`` once per row. Heads are dense when events spread
over many keys (20-30 ms per claim at a 100k backlog over 1,000 keys); a deep backlog
on one key makes each claim walk it (about 0.3 s per 100k rows, more while dead index
entries await vacuum), which a larger ``--batch`` amortises.
"""

from __future__ import annotations

import json
import logging
import random
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Protocol

from django.conf import settings
from django.db import connections, transaction
from django.db.models import Exists, F, OuterRef, Q, QuerySet
from django.db.models.functions import Now
from django.utils import timezone

from store.caching import bump
from store.models import OutboxEvent
from store.services.actors import Actor, actor_ref

logger = logging.getLogger("store.outbox")

STREAM = "storeops.events"

# Every topic a service enqueues: what consumers of the stream subscribe to (README,
# "Outbox topics"). One spelling each: bulk and single price changes are both
# ``price.changed`` (bulk ones were ``prices.changed`` until issue 13).
TOPIC_STOCK_CHANGED = "stock.changed"
TOPIC_PRICE_CHANGED = "price.changed"
TOPIC_ORDER_PLACED = "order.placed"
TOPIC_ORDER_PAID = "order.paid"
TOPIC_ORDER_CANCELLED = "order.cancelled"
TOPIC_PAYMENT_CAPTURED = "payment.captured"
DEFAULT_BATCH = 100
DEFAULT_LEASE_SECONDS = 30
BACKOFF_BASE_SECONDS = 2.0
BACKOFF_MAX_SECONDS = 300.0


def max_attempts() -> int:
    return int(settings.STOREOPS_OUTBOX_MAX_ATTEMPTS)


class PublishError(Exception):
    """The transport could not hand the event over (network, broker down)."""


class Transport(Protocol):
    def publish(self, event: OutboxEvent) -> None: ...


def event_message(event: OutboxEvent) -> dict[str, str]:
    return {
        "id": str(event.id),
        "topic": event.topic,
        "key": event.key,
        "created_at": event.created_at.isoformat(),
        "payload": json.dumps(event.payload, sort_keys=True),
    }


class LogTransport:
    """Without Redis the events go to the log, one JSON line each."""

    def publish(self, event: OutboxEvent) -> None:
        logger.info("event %s", json.dumps(event_message(event), sort_keys=True))


class RedisStreamTransport:
    def __init__(self, url: str, stream: str = STREAM) -> None:
        import redis

        self._redis = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        self._errors: tuple[type[BaseException], ...] = (redis.RedisError,)
        self.stream = stream

    def publish(self, event: OutboxEvent) -> None:
        try:
            self._redis.xadd(self.stream, event_message(event))  # type: ignore[arg-type]
        except self._errors as exc:
            raise PublishError(str(exc)) from exc


def default_transport() -> Transport:
    return RedisStreamTransport(settings.REDIS_URL) if settings.REDIS_URL else LogTransport()


# --- writing ------------------------------------------------------------------


def outbox_enqueue(
    *, topic: str, key: str, payload: dict[str, Any], using: str = "default"
) -> OutboxEvent:
    """Write the event in the caller's transaction: it commits or vanishes with the change."""
    if not connections[using].in_atomic_block:
        raise RuntimeError("outbox events must be written inside the change's transaction")
    event = OutboxEvent(topic=topic, key=key, payload=payload, available_at=Now())
    event.save(using=using, force_insert=True)
    bump("outbox", using=using)
    return event


# --- relaying -----------------------------------------------------------------


def _pending() -> QuerySet[OutboxEvent]:
    return OutboxEvent.objects.filter(published_at__isnull=True, dead_lettered_at__isnull=True)


def _claimable() -> QuerySet[OutboxEvent]:
    return _pending().filter(
        Q(claimed_until__isnull=True) | Q(claimed_until__lt=Now()), available_at__lte=Now()
    )


def _later(seconds: float) -> Any:
    return Now() + timedelta(seconds=seconds)  # type: ignore[operator]


def outbox_claim(
    *, relay_id: str, batch: int = DEFAULT_BATCH, lease_seconds: float = DEFAULT_LEASE_SECONDS
) -> list[OutboxEvent]:
    """Lease a batch to this relay in one short transaction (no I/O inside it)."""
    older_pending = _pending().filter(key=OuterRef("key"), created_at__lt=OuterRef("created_at"))
    with transaction.atomic():
        heads = list(
            _claimable()
            .exclude(~Q(key="") & Exists(older_pending))
            # The pending index's order; publishing order is by created_at below.
            .order_by("available_at")
            .select_for_update(skip_locked=True)[:batch]
        )
        keys = {event.key for event in heads if event.key}
        followers: list[OutboxEvent] = []
        if keys and len(heads) < batch:
            # Followers cannot be claimed by anyone else while their head is pending.
            followers = list(
                _claimable()
                .filter(key__in=keys)
                .exclude(pk__in=[event.pk for event in heads])
                .order_by("created_at")
                .select_for_update(skip_locked=True)[: batch - len(heads)]
            )
        events = sorted(heads + followers, key=lambda event: event.created_at)
        if events:
            OutboxEvent.objects.filter(pk__in=[event.pk for event in events]).update(
                claimed_by=relay_id, claimed_until=_later(lease_seconds)
            )
    return events


@dataclass
class RelayStats:
    claimed: int = 0
    published: int = 0
    failed: int = 0
    dead_lettered: int = 0


def backoff_seconds(attempts: int) -> float:
    ceiling = min(BACKOFF_MAX_SECONDS, BACKOFF_BASE_SECONDS * 2 ** (attempts - 1))
    return random.uniform(ceiling / 2, ceiling)


def outbox_publish(*, events: list[OutboxEvent], transport: Transport, relay_id: str) -> RelayStats:
    """Publish claimed events in order; a failure holds back the rest of its key."""
    stats = RelayStats(claimed=len(events))
    blocked: set[str] = set()
    published: list[uuid.UUID] = []
    try:
        for event in events:
            if event.key and event.key in blocked:
                _release(event, relay_id)
            elif _publish_one(event, transport):
                published.append(event.pk)
            else:
                stats.failed += 1
                if event.dead_lettered_at is not None:
                    stats.dead_lettered += 1
                if event.key:
                    blocked.add(event.key)
    finally:
        # One UPDATE for the batch; also after a crash mid-batch, so fewer duplicates.
        if published:
            OutboxEvent.objects.filter(pk__in=published, published_at__isnull=True).update(
                published_at=Now(), attempts=F("attempts") + 1, claimed_until=None, claimed_by=""
            )
        stats.published = len(published)
        if published or stats.failed:
            bump("outbox")
    return stats


def _release(event: OutboxEvent, relay_id: str) -> None:
    """Hand a held-back event back, untouched, for a later batch."""
    OutboxEvent.objects.filter(pk=event.pk, claimed_by=relay_id).update(
        claimed_until=None, claimed_by=""
    )


def _publish_one(event: OutboxEvent, transport: Transport) -> bool:
    """Publish; on failure schedule a retry on the database clock or dead-letter it."""
    try:
        transport.publish(event)
    except PublishError as exc:
        attempts = event.attempts + 1
        changes: dict[str, Any] = {
            "attempts": F("attempts") + 1,
            "last_error": str(exc)[:2000],
            "claimed_until": None,
            "claimed_by": "",
        }
        if attempts >= max_attempts():
            changes["dead_lettered_at"] = Now()
            event.dead_lettered_at = timezone.now()
            logger.error("event %s dead-lettered after %d attempts: %s", event.id, attempts, exc)
        else:
            changes["available_at"] = _later(backoff_seconds(attempts))
            logger.warning("event %s attempt %d failed: %s", event.id, attempts, exc)
        OutboxEvent.objects.filter(pk=event.pk, published_at__isnull=True).update(**changes)
        return False
    return True


def outbox_relay_once(
    *,
    transport: Transport,
    relay_id: str = "",
    batch: int = DEFAULT_BATCH,
    lease_seconds: float = DEFAULT_LEASE_SECONDS,
) -> RelayStats:
    relay_id = relay_id or f"relay-{uuid.uuid4().hex[:12]}"
    events = outbox_claim(relay_id=relay_id, batch=batch, lease_seconds=lease_seconds)
    return outbox_publish(events=events, transport=transport, relay_id=relay_id)


def outbox_requeue(*, event_id: uuid.UUID, actor: Actor) -> OutboxEvent:
    """Give a dead letter a fresh set of attempts (audited in the log with the actor)."""
    with transaction.atomic():
        event = OutboxEvent.objects.select_for_update().get(pk=event_id)
        if event.dead_lettered_at is not None:
            OutboxEvent.objects.filter(pk=event.pk).update(
                dead_lettered_at=None,
                attempts=0,
                available_at=Now(),
                claimed_until=None,
                claimed_by="",
            )
            logger.info("event %s requeued by user %s", event.id, actor_ref(actor))
            bump("outbox")
        event.refresh_from_db()
    return event


DEFAULT_RETAIN_HOURS = 168.0
PRUNE_BATCH = 5_000


def outbox_prune(*, retain: timedelta, batch: int = PRUNE_BATCH, max_batches: int = 20) -> int:
    """Delete published events created more than ``retain`` ago; returns how many.

    Without this the outbox only grows, and the outbox panel's totals scan every
    event ever written. Pending events and dead letters are never pruned. Deletes
    go in batches (short transactions, found through the ``created_at`` index), and
    at most ``max_batches`` per call, so a relay catching up on a large first prune
    goes back to publishing in between.
    """
    deleted = 0
    for _ in range(max_batches):
        old_published = OutboxEvent.objects.filter(
            created_at__lt=Now() - retain, published_at__isnull=False
        ).order_by("created_at")
        ids = list(old_published.values_list("pk", flat=True)[:batch])
        if not ids:
            break
        deleted += OutboxEvent.objects.filter(pk__in=ids).delete()[0]
        if len(ids) < batch:
            break
    if deleted:
        logger.info("pruned %d published outbox events older than %s", deleted, retain)
        bump("outbox")
    return deleted
