"""``manage.py check --database default``: the configured shards serve the stored map."""

from __future__ import annotations

from typing import Any

from django.core import checks
from django.core.exceptions import ImproperlyConfigured
from django.db import DatabaseError


def shard_map(databases: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    if not databases or "default" not in databases:
        return []
    from store.models import ShardBucket
    from store.sharding import check_shard_map

    try:
        if not ShardBucket.objects.using("default").exists():
            # Not created yet: migrate (which runs this check first) creates it.
            return [
                checks.Warning("no bucket map is stored yet: migrate creates it", id="store.W001")
            ]
        check_shard_map()
    except ImproperlyConfigured as exc:
        return [checks.Error(str(exc), id="store.E001")]
    except DatabaseError as exc:  # not migrated yet: migrate creates the map
        return [checks.Warning(f"the bucket map cannot be read: {exc}", id="store.W001")]
    return []


def register() -> None:
    checks.register(shard_map, checks.Tags.database)
