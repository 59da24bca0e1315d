"""The outbox_relay and idempotency_cleanup commands as operators run them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import timedelta
from io import StringIO

import pytest
from django.conf import settings
from django.core.management import call_command
from django.db import connections, transaction
from django.utils import timezone

from store.models import IdempotencyKey, OutboxEvent
from store.services.outbox import outbox_enqueue, outbox_prune

pytestmark = pytest.mark.django_db(transaction=True)


def _enqueue(n: int) -> None:
    with transaction.atomic():
        for i in range(n):
            outbox_enqueue(topic="t", key=f"product:{i % 2}", payload={"n": i})


def test_relay_once_publishes_the_backlog() -> None:
    _enqueue(3)
    out = StringIO()
    call_command("outbox_relay", "--once", stdout=out)
    assert "published 3" in out.getvalue()
    assert not OutboxEvent.objects.filter(published_at__isnull=True).exists()


def test_cleanup_deletes_only_expired_keys(operator) -> None:
    now = timezone.now()
    IdempotencyKey.objects.create(key="old", user=operator, fingerprint="x", expires_at=now)
    IdempotencyKey.objects.create(
        key="new", user=operator, fingerprint="x", expires_at=now + timedelta(hours=1)
    )
    out = StringIO()
    call_command("idempotency_cleanup", stdout=out)
    assert "deleted 1" in out.getvalue()
    assert list(IdempotencyKey.objects.values_list("key", flat=True)) == ["new"]


def _test_database_url(alias: str) -> str:
    params = connections[alias].settings_dict
    return f"postgres://{params['USER']}@{params['HOST']}:{params['PORT']}/{params['NAME']}"


@pytest.mark.postgres
def test_relay_process_stops_cleanly_on_sigterm() -> None:
    _enqueue(4)
    env = {
        **os.environ,
        "DATABASE_URL": _test_database_url("default"),
        "DATABASE_SHARD_URLS": ",".join(_test_database_url(a) for a in settings.SHARD_ALIASES),
    }
    relay = subprocess.Popen(
        [sys.executable, "manage.py", "outbox_relay", "--interval", "0.2"],
        cwd=settings.BASE_DIR,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while OutboxEvent.objects.filter(published_at__isnull=True).exists():
            assert time.monotonic() < deadline, "relay never published"
            assert relay.poll() is None, relay.stderr.read() if relay.stderr else ""
            time.sleep(0.1)
        relay.send_signal(signal.SIGTERM)
        out, _ = relay.communicate(timeout=10)
    finally:
        if relay.poll() is None:
            relay.kill()
    assert relay.returncode == 0
    assert "stopped" in out


def test_relay_prunes_only_old_published_events() -> None:
    _enqueue(4)
    call_command("outbox_relay", "--once", stdout=StringIO())  # publishes all four
    old, recent, *_ = OutboxEvent.objects.order_by("created_at")
    ten_days_ago = timezone.now() - timedelta(days=10)
    OutboxEvent.objects.filter(pk=old.pk).update(created_at=ten_days_ago)
    # Old but never delivered: a pending event and a dead letter must stay.
    _enqueue(2)
    pending, dead = OutboxEvent.objects.filter(published_at__isnull=True)
    OutboxEvent.objects.filter(pk=pending.pk).update(
        created_at=ten_days_ago, available_at=timezone.now() + timedelta(hours=1)
    )
    OutboxEvent.objects.filter(pk=dead.pk).update(
        created_at=ten_days_ago, dead_lettered_at=timezone.now()
    )

    out = StringIO()
    call_command("outbox_relay", "--once", "--retain-hours", "168", stdout=out)

    assert "pruned 1 published events" in out.getvalue()
    assert not OutboxEvent.objects.filter(pk=old.pk).exists()
    assert OutboxEvent.objects.filter(pk__in=[recent.pk, pending.pk, dead.pk]).count() == 3
    # --retain-hours 0 keeps everything.
    OutboxEvent.objects.filter(pk=recent.pk).update(created_at=ten_days_ago)
    call_command("outbox_relay", "--once", "--retain-hours", "0", stdout=StringIO())
    assert OutboxEvent.objects.filter(pk=recent.pk).exists()


def test_one_prune_call_deletes_at_most_its_batches() -> None:
    _enqueue(5)
    OutboxEvent.objects.update(
        published_at=timezone.now(), created_at=timezone.now() - timedelta(days=10)
    )
    assert outbox_prune(retain=timedelta(days=7), batch=2, max_batches=2) == 4
    assert OutboxEvent.objects.count() == 1
    assert outbox_prune(retain=timedelta(days=7), batch=2, max_batches=2) == 1
    assert not OutboxEvent.objects.exists()
