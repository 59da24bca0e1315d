from __future__ import annotations

import time
from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from store.selectors.rollups import rollup_differences
from store.services.rollup_rebuild import ROLLUP_NAMES, rollups_rebuild


class Command(BaseCommand):
    help = (
        "verify: compare every rollup with a full scan of the base tables (exit 1 on any "
        "difference). rebuild: rewrite rollups from the full scan online, in short "
        "batches (run it again to resume)."
    )

    def add_arguments(self, parser: CommandParser | ArgumentParser) -> None:
        parser.add_argument("action", choices=["verify", "rebuild"])
        parser.add_argument(
            "--only", choices=ROLLUP_NAMES, action="append", help="Limit to these rollups."
        )
        parser.add_argument(
            "--batch", type=int, default=100_000, help="Products per rebuild batch."
        )
        parser.add_argument(
            "--whole",
            action="store_true",
            help="One statement per rollup (fast; writers wait until it is done).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        names = tuple(options["only"] or ROLLUP_NAMES)
        started = time.perf_counter()
        if options["action"] == "rebuild":
            batch = None if options["whole"] else options["batch"]
            batches = rollups_rebuild(names=names, batch_products=batch)
            elapsed = time.perf_counter() - started
            self.stdout.write(f"Rebuilt {', '.join(names)} in {batches} batches, {elapsed:.1f}s.")
            return
        differences = rollup_differences(names=names)
        elapsed = time.perf_counter() - started
        for difference in differences:
            self.stdout.write(str(difference))
        if differences:
            raise CommandError(f"{len(differences)} rollup row(s) differ from the full scan.")
        self.stdout.write(self.style.SUCCESS(f"Rollups agree with the full scan ({elapsed:.1f}s)."))
