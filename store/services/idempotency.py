"""Idempotency keys: one result per (user, key), replayed on every resubmission.

The key row is inserted in the same transaction as the change it guards, so the
change and its stored response commit together or not at all. A concurrent
duplicate blocks on the unique index until the first transaction ends, then reads
the committed row and replays it (or, if the first one failed, runs itself).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, transaction
from django.utils import timezone

from store.exceptions import IdempotencyInProgress, IdempotencyMismatch
from store.models import IdempotencyKey
from store.services.retry import atomic_with_retry

KEY_TTL = timedelta(hours=24)


@dataclass(frozen=True)
class StoredResponse:
    """What the first request answered: a redirect (status + location) or a body."""

    status: int
    body: str = ""
    location: str = ""


@dataclass(frozen=True)
class IdempotentOutcome:
    response: StoredResponse
    replayed: bool


def request_fingerprint(action: str, payload: dict[str, Any]) -> str:
    canonical = json.dumps({"action": action, "payload": payload}, sort_keys=True, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def idempotency_run(
    *,
    user: AbstractBaseUser,
    key: str,
    fingerprint: str,
    perform: Callable[[], StoredResponse],
    now: datetime | None = None,
) -> IdempotentOutcome:
    """Run ``perform`` once for this user's key; later calls replay its response.

    Domain errors raised by ``perform`` roll the key back with the change, so a
    corrected resubmission with the same key is free to run.
    """

    def attempt() -> IdempotentOutcome:
        started = now or timezone.now()
        try:
            with transaction.atomic():
                record = IdempotencyKey.objects.create(
                    key=key, user_id=user.pk, fingerprint=fingerprint, expires_at=started + KEY_TTL
                )
        except IntegrityError:
            existing = IdempotencyKey.objects.select_for_update().get(user_id=user.pk, key=key)
            if existing.expires_at > started:
                return IdempotentOutcome(response=_replay(existing, fingerprint), replayed=True)
            # Expired but not yet cleaned up: the key is free again.
            existing.delete()
            record = IdempotencyKey.objects.create(
                key=key, user_id=user.pk, fingerprint=fingerprint, expires_at=started + KEY_TTL
            )
        response = perform()
        IdempotencyKey.objects.filter(pk=record.pk).update(
            response_status=response.status,
            response_body=response.body,
            response_location=response.location,
            completed_at=timezone.now(),
        )
        return IdempotentOutcome(response=response, replayed=False)

    return atomic_with_retry(attempt)


def _replay(record: IdempotencyKey, fingerprint: str) -> StoredResponse:
    if record.fingerprint != fingerprint:
        raise IdempotencyMismatch()
    if record.response_status is None:
        raise IdempotencyInProgress()
    return StoredResponse(
        status=record.response_status,
        body=record.response_body,
        location=record.response_location,
    )


def idempotency_cleanup(*, now: datetime | None = None) -> int:
    """Delete expired keys; returns how many went."""
    deleted, _ = IdempotencyKey.objects.filter(expires_at__lte=now or timezone.now()).delete()
    return deleted
