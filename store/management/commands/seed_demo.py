from __future__ import annotations

import sys
import time
from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from store.services.seeding import SeedPlan, seed_demo


class Command(BaseCommand):
    help = "Load a deterministic demo data set (shops, catalog, orders, customers) in bulk."

    def add_arguments(self, parser: CommandParser | ArgumentParser) -> None:
        defaults = SeedPlan.__dataclass_fields__
        for name in ("shops", "categories", "products", "orders", "customers", "seed"):
            parser.add_argument(f"--{name}", type=int, default=defaults[name].default)
        parser.add_argument(
            "--history-days",
            type=int,
            default=defaults["history_days"].default,
            help="Days of order history (default 90); the last 90 look the same whatever this is.",
        )
        parser.add_argument("--no-progress", action="store_true", help="Print no progress bar.")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            plan = SeedPlan(
                **{
                    k: options[k]
                    for k in (
                        "shops",
                        "categories",
                        "products",
                        "orders",
                        "customers",
                        "seed",
                        "history_days",
                    )
                }
            )
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        started = time.perf_counter()
        show = not options["no_progress"]
        try:
            result = seed_demo(plan=plan, progress=self.progress if show else _silent)
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        if show:
            self.stdout.write("")
        elapsed = time.perf_counter() - started
        rows = sum(result.counts.values())
        summary = ", ".join(f"{count:,} {name}" for name, count in result.counts.items())
        self.stdout.write(
            self.style.SUCCESS(
                f"Seeded {summary} in {elapsed:.1f}s ({rows / elapsed:,.0f} rows/s)."
            )
        )

    def progress(self, label: str, done: int, total: int) -> None:
        width = 30
        filled = width * done // max(total, 1)
        bar = "#" * filled + "-" * (width - filled)
        end = "\n" if done >= total else ""
        self.stdout.write(f"\r{label:>10} [{bar}] {done:,}/{total:,}", ending=end)
        sys.stdout.flush()


def _silent(label: str, done: int, total: int) -> None:
    return None
