"""The console's roles: which permissions each ops group carries.

One definition, used by the data migration (with historical models), by ``demo``
and by the test personas, so the groups cannot drift apart.
"""

from __future__ import annotations

from typing import Any

from django.apps import apps as global_apps

VIEW_MODELS = ["shop", "category", "product", "order", "orderitem", "stockmovement", "outboxevent"]
OPS_GROUPS: dict[str, list[str]] = {
    "ops-viewer": ["view_dashboard", *(f"view_{m}" for m in VIEW_MODELS)],
    "ops-operator": [
        "view_dashboard",
        "adjust_stock",
        "mark_order_paid",
        "cancel_order",
        *(f"view_{m}" for m in VIEW_MODELS),
    ],
}


def ops_groups_sync(*, apps: Any = global_apps, using: str = "default") -> None:
    """Create the groups if missing and set exactly their permissions (idempotent)."""
    from django.contrib.auth.management import create_permissions

    store_config = apps.get_app_config("store")
    store_config.models_module = True  # historical app configs lack it
    create_permissions(store_config, apps=apps, verbosity=0, using=using)
    group_model = apps.get_model("auth", "Group")
    permission_model = apps.get_model("auth", "Permission")
    for name, codenames in OPS_GROUPS.items():
        group, _ = group_model.objects.using(using).get_or_create(name=name)
        group.permissions.set(
            permission_model.objects.using(using).filter(
                content_type__app_label="store", codename__in=codenames
            )
        )
