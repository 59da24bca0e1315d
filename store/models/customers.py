"""Customer data on the shards, and the bucket map that says which shard holds whom.

``CustomerProfile`` and ``CustomerEvent`` live on the ``shard_N`` databases (see
``store/sharding.py``); ``ShardBucket`` and ``ShardMove`` live on the primary.
"""

from __future__ import annotations

from typing import Any

from django.db import models


class ShardedQuerySet(models.QuerySet[Any]):
    def for_user(self, user_id: int) -> Any:
        # The "user_id" hint sends these queries to the user's shard (ShardRouter):
        # no import of store.sharding here, which imports the models. Django passes a
        # QuerySet's _hints to the router and keeps them on every clone (the stubs
        # do not declare the attribute).
        queryset = self.filter(user_id=user_id)
        queryset._hints = {**queryset._hints, "user_id": user_id}  # type: ignore[attr-defined]
        return queryset


class CustomerProfile(models.Model):
    user_id = models.PositiveBigIntegerField(unique=True)
    bucket = models.PositiveSmallIntegerField(db_index=True)
    name = models.CharField(max_length=120)
    email = models.EmailField()
    lifetime_value = models.PositiveBigIntegerField(default=0, help_text="Cents.")
    created_at = models.DateTimeField()

    objects = ShardedQuerySet.as_manager()

    class Meta:
        ordering = ["user_id"]

    def __str__(self) -> str:
        return self.name


class CustomerEvent(models.Model):
    user_id = models.PositiveBigIntegerField()
    bucket = models.PositiveSmallIntegerField(db_index=True)
    kind = models.CharField(max_length=32)
    product_id = models.PositiveBigIntegerField(null=True, blank=True)
    payload = models.JSONField(default=dict)
    created_at = models.DateTimeField(db_index=True)

    objects = ShardedQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["user_id", "created_at"], name="event_user_created")]

    def __str__(self) -> str:
        return f"{self.kind} {self.user_id}"


SHARDED_MODELS = frozenset({"customerprofile", "customerevent"})


class ShardBucket(models.Model):
    """Where a logical bucket lives: the one truth about which shard holds it.

    Every bucket has a row, stored once (``store.sharding.shard_map_init``, run by
    ``migrate`` and ``shards init`` for buckets without one); only ``shards move``
    changes a row, never the configured shard list. ``frozen`` is set
    while ``shards move`` copies the bucket: writes to it are refused for those
    seconds so no row can land on the source after it was copied.
    """

    bucket = models.PositiveSmallIntegerField(primary_key=True)
    alias = models.CharField(max_length=32)
    frozen = models.BooleanField(default=False)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["bucket"]

    def __str__(self) -> str:
        return f"bucket {self.bucket} -> {self.alias}"


class ShardMove(models.Model):
    """Progress of one ``shards move``, so an interrupted move resumes where it stopped."""

    class State(models.TextChoices):
        COPYING = "copying", "Copying"
        FLIPPED = "flipped", "Map flipped, source not yet cleaned"
        DONE = "done", "Done"

    first_bucket = models.PositiveSmallIntegerField()
    last_bucket = models.PositiveSmallIntegerField()
    target = models.CharField(max_length=32)
    state = models.CharField(max_length=16, choices=State.choices, default=State.COPYING)
    # {bucket: source alias} recorded when the buckets were frozen.
    sources = models.JSONField(default=dict)
    # Buckets copied and verified (counts and checksums equal on both sides).
    verified = models.JSONField(default=list)
    started_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-started_at"]

    def __str__(self) -> str:
        return f"buckets {self.first_bucket}-{self.last_bucket} -> {self.target} ({self.state})"
