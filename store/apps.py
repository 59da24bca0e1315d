from typing import Any

from django.apps import AppConfig
from django.db.models.signals import post_migrate


def _create_shard_map(using: str = "default", **kwargs: Any) -> None:
    """The bucket map is created once, when the primary is migrated (and again after a
    test flush empties it); a complete map is never touched (store.sharding)."""
    if using != "default":
        return
    from store.sharding import shard_map_init

    shard_map_init(using=using)


class StoreConfig(AppConfig):
    name = "store"
    verbose_name = "Store"

    def ready(self) -> None:
        from store import checks, signals

        signals.connect()
        checks.register()
        post_migrate.connect(_create_shard_map, sender=self)
