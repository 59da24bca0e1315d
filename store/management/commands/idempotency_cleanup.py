from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from store.services.idempotency import idempotency_cleanup


class Command(BaseCommand):
    help = "Delete idempotency keys older than their 24-hour lifetime (run it from cron)."

    def handle(self, *args: Any, **options: Any) -> None:
        deleted = idempotency_cleanup()
        self.stdout.write(f"deleted {deleted} expired idempotency key(s)")
