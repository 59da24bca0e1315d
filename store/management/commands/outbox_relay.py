from __future__ import annotations

import logging
import signal
import socket
import threading
import time
import uuid
from argparse import ArgumentParser
from datetime import timedelta
from types import FrameType
from typing import Any

from django.core.management.base import BaseCommand, CommandParser
from django.db import DatabaseError, close_old_connections

from store.services.outbox import (
    DEFAULT_BATCH,
    DEFAULT_LEASE_SECONDS,
    DEFAULT_RETAIN_HOURS,
    RelayStats,
    default_transport,
    outbox_prune,
    outbox_relay_once,
)

# Pruning is housekeeping: a relay does it at most this often, between batches.
PRUNE_EVERY_SECONDS = 60.0

logger = logging.getLogger("store.outbox")


class Command(BaseCommand):
    help = (
        "Publish outbox events to the Redis stream storeops.events (or the log without "
        "REDIS_URL). Several relays may run; stops cleanly on SIGTERM/SIGINT."
    )

    def add_arguments(self, parser: CommandParser | ArgumentParser) -> None:
        parser.add_argument("--once", action="store_true", help="Relay one batch and exit.")
        parser.add_argument("--batch", type=int, default=DEFAULT_BATCH)
        parser.add_argument("--lease", type=float, default=DEFAULT_LEASE_SECONDS)
        parser.add_argument(
            "--interval", type=float, default=1.0, help="Seconds to wait when idle."
        )
        parser.add_argument(
            "--retain-hours",
            type=float,
            default=DEFAULT_RETAIN_HOURS,
            help="Delete published events older than this (default: 7 days); 0 keeps all.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        self.stopping = threading.Event()
        relay_id = f"{socket.gethostname()}:{uuid.uuid4().hex[:8]}"
        transport = default_transport()
        previous = {sig: signal.signal(sig, self._stop) for sig in (signal.SIGTERM, signal.SIGINT)}
        retain = timedelta(hours=options["retain_hours"]) if options["retain_hours"] > 0 else None
        last_prune = float("-inf")
        try:
            while True:
                try:
                    stats = self.relay_batch(
                        transport, relay_id, options["batch"], options["lease"]
                    )
                    if retain and time.monotonic() - last_prune >= PRUNE_EVERY_SECONDS:
                        last_prune = time.monotonic()
                        if pruned := outbox_prune(retain=retain):
                            self.stdout.write(f"pruned {pruned} published events")
                except DatabaseError as exc:
                    if options["once"]:
                        raise
                    # A database outage pauses the relay; the leases of its claims lapse.
                    logger.warning("relay %s: database error, retrying: %s", relay_id, exc)
                    stats = RelayStats()
                if options["once"] or self.stopping.is_set():
                    break
                if not stats.claimed:
                    # An Event wait wakes at once on SIGTERM instead of sleeping on.
                    self.stopping.wait(options["interval"])
                if self.stopping.is_set():
                    break
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        self.stdout.write(f"relay {relay_id} stopped")

    def relay_batch(self, transport: Any, relay_id: str, batch: int, lease: float) -> RelayStats:
        close_old_connections()
        stats = outbox_relay_once(
            transport=transport, relay_id=relay_id, batch=batch, lease_seconds=lease
        )
        if stats.claimed:
            self.stdout.write(
                f"claimed {stats.claimed} published {stats.published} "
                f"failed {stats.failed} dead-lettered {stats.dead_lettered}"
            )
        return stats

    def _stop(self, signum: int, frame: FrameType | None) -> None:
        # The current batch finishes; the loop then exits. Unpublished claims lapse.
        self.stopping.set()
