"""Outbox relay: at least once, in order per key, back-off, dead letters, crash recovery."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.conf import settings as django_settings
from django.db import transaction
from django.utils import timezone

from store.models import OutboxEvent
from store.selectors.outbox import outbox_stats
from store.services.outbox import (
    PublishError,
    RedisStreamTransport,
    outbox_claim,
    outbox_enqueue,
    outbox_publish,
    outbox_relay_once,
    outbox_requeue,
)

pytestmark = pytest.mark.django_db(transaction=True)


class Collecting:
    """Stands in for the broker: the only thing faked, since it leaves the project."""

    def __init__(self, fail_keys: set[str] | None = None) -> None:
        self.seen: list[OutboxEvent] = []
        self.fail_keys = fail_keys or set()

    def publish(self, event: OutboxEvent) -> None:
        if event.key in self.fail_keys:
            raise PublishError("broker down")
        self.seen.append(event)


class Crash(Exception):
    pass


class Crashing:
    def publish(self, event: OutboxEvent) -> None:
        raise Crash("relay process died")


def _enqueue(key: str, n: int, topic: str = "t") -> list[OutboxEvent]:
    with transaction.atomic():
        return [outbox_enqueue(topic=topic, key=key, payload={"n": i}) for i in range(n)]


def test_enqueue_outside_a_transaction_is_a_bug() -> None:
    with pytest.raises(RuntimeError, match="inside the change's transaction"):
        outbox_enqueue(topic="t", key="k", payload={})


def _enqueue_then_fail() -> None:
    with transaction.atomic():
        outbox_enqueue(topic="t", key="k", payload={})
        raise Crash("the change failed after its event was written")


def test_events_of_a_rolled_back_change_never_exist() -> None:
    with pytest.raises(Crash):
        _enqueue_then_fail()
    assert not OutboxEvent.objects.exists()


def test_relay_publishes_each_key_in_creation_order() -> None:
    _enqueue("product:1", 3)
    _enqueue("product:2", 2)
    transport = Collecting()
    stats = outbox_relay_once(transport=transport)
    assert stats.published == 5
    by_key: dict[str, list[int]] = {}
    for event in transport.seen:
        by_key.setdefault(event.key, []).append(event.payload["n"])
    assert by_key == {"product:1": [0, 1, 2], "product:2": [0, 1]}
    assert outbox_stats().backlog == 0
    assert outbox_relay_once(transport=transport).claimed == 0


def test_a_failing_head_holds_back_its_key_but_not_others() -> None:
    _enqueue("product:1", 2)
    _enqueue("product:2", 1)
    transport = Collecting(fail_keys={"product:1"})
    stats = outbox_relay_once(transport=transport)
    assert (stats.published, stats.failed) == (1, 1)
    head, follower = OutboxEvent.objects.filter(key="product:1").order_by("created_at")
    assert head.attempts == 1
    assert head.available_at > timezone.now()
    assert "broker down" in head.last_error
    assert follower.attempts == 0
    assert follower.claimed_by == ""
    # The follower is not claimable while its head waits out the back-off.
    assert outbox_claim(relay_id="other") == []
    assert outbox_stats().failing == 1


def test_dead_letter_after_max_attempts_then_requeue(superuser, settings) -> None:
    settings.STOREOPS_OUTBOX_MAX_ATTEMPTS = 2
    (event,) = _enqueue("product:9", 1)
    failing = Collecting(fail_keys={"product:9"})
    outbox_relay_once(transport=failing)
    OutboxEvent.objects.filter(pk=event.pk).update(available_at=timezone.now())
    assert outbox_relay_once(transport=failing).dead_lettered == 1
    stats = outbox_stats()
    assert (stats.backlog, stats.dead_letters) == (0, 1)
    assert stats.recent_dead_letters[0].pk == event.pk
    outbox_requeue(event_id=event.pk, actor=superuser)
    healthy = Collecting()
    assert outbox_relay_once(transport=healthy).published == 1
    assert [e.pk for e in healthy.seen] == [event.pk]


def test_crash_between_claim_and_publish_is_published_later_once_per_id() -> None:
    events = _enqueue("product:3", 2) + _enqueue("", 1)
    with pytest.raises(Crash):
        outbox_relay_once(transport=Crashing(), relay_id="crashed", lease_seconds=30)
    assert set(OutboxEvent.objects.values_list("claimed_by", flat=True)) == {"crashed"}
    # While the lease holds nobody else takes the events.
    assert outbox_claim(relay_id="early") == []
    OutboxEvent.objects.update(claimed_until=timezone.now() - timedelta(seconds=1))
    consumer = Collecting()
    outbox_relay_once(transport=consumer, relay_id="survivor")
    outbox_relay_once(transport=consumer, relay_id="survivor")
    ids = [e.pk for e in consumer.seen]
    assert sorted(ids) == sorted(e.pk for e in events)
    assert len(ids) == len(set(ids))


def test_two_relays_never_claim_the_same_event() -> None:
    _enqueue("product:1", 3)
    _enqueue("product:2", 3)
    first = outbox_claim(relay_id="a", batch=1)
    second = outbox_claim(relay_id="b", batch=10)
    assert {e.pk for e in first}.isdisjoint({e.pk for e in second})
    # Each relay owns whole keys: no key is split across the two.
    assert {e.key for e in first}.isdisjoint({e.key for e in second})
    stats = outbox_publish(events=second, transport=Collecting(), relay_id="b")
    assert stats.published == 3


@pytest.mark.redis
def test_redis_stream_receives_each_event_with_its_id() -> None:
    import redis

    client = redis.Redis.from_url(django_settings.REDIS_URL)
    stream = "storeops.events.test"
    client.delete(stream)
    events = _enqueue("product:5", 3)
    outbox_relay_once(transport=RedisStreamTransport(django_settings.REDIS_URL, stream=stream))
    entries = client.xrange(stream)
    assert [fields[b"id"].decode() for _, fields in entries] == [str(e.pk) for e in events]
    client.delete(stream)
