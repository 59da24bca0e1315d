"""Moving logical buckets between shards, online, resumably.

A move of buckets A..B to ``shard_N`` runs in steps recorded in ``ShardMove``:

1. freeze: every bucket not yet on the target gets a ``ShardBucket`` row marked
   frozen (writes to it raise ``BucketMoving``), its source is recorded, and we wait
   ``STOREOPS_SHARD_MAP_SECONDS`` so every process has seen the freeze;
2. copy each bucket: on the target, delete whatever a crashed earlier run left for
   that bucket, insert the source rows, then compare counts and checksums; a
   verified bucket is recorded and skipped when the move is re-run;
3. flip: point the buckets at the target and unfreeze, in one transaction on the
   primary, then wait again so no process still routes to the source;
4. delete the bucket's rows from the source.

Any step can be interrupted and the same command run again finishes the move.
Rows get new primary keys on the target (ids are per-shard sequences), so
checksums cover the row contents, not the ids.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass

from django.conf import settings
from django.db import transaction
from django.db.models import Model
from django.utils import timezone

from store.exceptions import MoveRefused, MoveVerificationFailed
from store.models import CustomerEvent, CustomerProfile, ShardBucket, ShardMove
from store.sharding import Gathered, scatter_gather, shard_for_bucket, shard_map_reset

# Content columns compared by the checksum (never the per-shard ids).
COLUMNS: dict[type[Model], tuple[str, ...]] = {
    CustomerProfile: ("user_id", "bucket", "name", "email", "lifetime_value", "created_at"),
    CustomerEvent: ("user_id", "bucket", "kind", "product_id", "payload", "created_at"),
}
BATCH = 2000


@dataclass(frozen=True)
class BucketDigest:
    count: int
    checksum: str


def bucket_digest(*, alias: str, model: type[Model], bucket: int) -> BucketDigest:
    """Row count and an order-independent-of-ids checksum of one bucket on one shard."""
    columns = COLUMNS[model]
    rows = (
        model._default_manager.using(alias)
        .filter(bucket=bucket)
        .order_by(*columns[:1], "created_at", "pk")
        .values_list(*columns)
    )
    lines = sorted(json.dumps(row, default=str, sort_keys=True) for row in rows.iterator())
    digest = hashlib.sha256("\n".join(lines).encode()).hexdigest()
    return BucketDigest(len(lines), digest)


def _copy_bucket(*, model: type[Model], bucket: int, source: str, target: str) -> None:
    manager = model._default_manager
    with transaction.atomic(using=target):
        # Leftovers of an interrupted run: the target does not own this bucket yet.
        manager.using(target).filter(bucket=bucket).delete()
        batch: list[Model] = []
        for row in manager.using(source).filter(bucket=bucket).order_by("pk").iterator():
            row.pk = None
            batch.append(row)
            if len(batch) >= BATCH:
                manager.using(target).bulk_create(batch)
                batch = []
        if batch:
            manager.using(target).bulk_create(batch)


def _wait_for_map() -> None:
    shard_map_reset()
    time.sleep(settings.STOREOPS_SHARD_MAP_SECONDS)


def shards_move(
    *,
    first: int,
    last: int,
    target: str,
    max_buckets: int | None = None,
    progress: Callable[[str], None] = lambda _msg: None,
) -> ShardMove:
    """Move buckets ``first..last`` to ``target``; see the module docstring.

    ``max_buckets`` copies at most that many buckets in this run and stops (the move
    stays resumable): a way to spread a large move over several short runs.
    """
    if target not in settings.SHARD_ALIASES:
        raise MoveRefused(f"unknown shard {target!r}; shards: {', '.join(settings.SHARD_ALIASES)}")
    if not 0 <= first <= last < settings.STOREOPS_SHARD_BUCKETS:
        raise MoveRefused(
            f"bucket range must be within 0..{settings.STOREOPS_SHARD_BUCKETS - 1}, "
            f"got {first}-{last}"
        )
    move = ShardMove.objects.using("default").filter(
        first_bucket=first, last_bucket=last, target=target
    ).exclude(state=ShardMove.State.DONE).first() or _start(first, last, target, progress)

    if move.state == ShardMove.State.COPYING:
        copied_now = 0
        for key, source in sorted(move.sources.items(), key=lambda item: int(item[0])):
            bucket = int(key)
            if bucket in move.verified:
                continue
            if max_buckets is not None and copied_now >= max_buckets:
                progress(f"stopped after {copied_now} buckets; run the same command to resume")
                return move
            for model in COLUMNS:
                _copy_bucket(model=model, bucket=bucket, source=source, target=target)
                before = bucket_digest(alias=source, model=model, bucket=bucket)
                after = bucket_digest(alias=target, model=model, bucket=bucket)
                if before != after:
                    raise MoveVerificationFailed(
                        f"bucket {bucket} {model.__name__}: {source} has {before.count} rows "
                        f"({before.checksum[:12]}), {target} has {after.count} "
                        f"({after.checksum[:12]})"
                    )
            move.verified = [*move.verified, bucket]
            move.save(using="default", update_fields=["verified"])
            copied_now += 1
            progress(f"bucket {bucket}: copied from {source} and verified")
        with transaction.atomic(using="default"):
            ShardBucket.objects.using("default").filter(bucket__in=move.verified).update(
                alias=target, frozen=False
            )
            move.state = ShardMove.State.FLIPPED
            move.save(using="default", update_fields=["state"])
        progress(f"map flipped: buckets {first}-{last} now on {target}")
        _wait_for_map()

    if move.state == ShardMove.State.FLIPPED:
        for key, source in move.sources.items():
            for model in COLUMNS:
                model._default_manager.using(source).filter(bucket=int(key)).delete()
        move.state = ShardMove.State.DONE
        move.finished_at = timezone.now()
        move.save(using="default", update_fields=["state", "finished_at"])
        progress(f"deleted the moved rows from {', '.join(sorted(set(move.sources.values())))}")
    return move


def _start(first: int, last: int, target: str, progress: Callable[[str], None]) -> ShardMove:
    sources = {
        str(bucket): alias
        for bucket in range(first, last + 1)
        if (alias := shard_for_bucket(bucket)) != target
    }
    with transaction.atomic(using="default"):
        move = ShardMove.objects.using("default").create(
            first_bucket=first, last_bucket=last, target=target, sources=sources
        )
        for key, alias in sources.items():
            ShardBucket.objects.using("default").update_or_create(
                bucket=int(key), defaults={"alias": alias, "frozen": True}
            )
    progress(f"froze {len(sources)} buckets (writes refused while they move)")
    _wait_for_map()
    return move


def shard_row_counts() -> Gathered[tuple[int, int]]:
    """Rows per shard (profiles, events), gathered in parallel; failures are reported."""

    def on_shard(alias: str) -> tuple[int, int]:
        return (
            CustomerProfile.objects.using(alias).count(),
            CustomerEvent.objects.using(alias).count(),
        )

    return scatter_gather(on_shard, timeout=30)
