"""``manage.py shards``: the bucket map and rows per shard; ``shards move`` moves buckets."""

from __future__ import annotations

import re
from argparse import ArgumentParser
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import DatabaseError

from store.exceptions import MoveRefused, MoveVerificationFailed
from store.services.shards import shard_row_counts, shards_move
from store.sharding import bucket_map, bucket_ranges, frozen_buckets, map_problems, shard_map_init


class Command(BaseCommand):
    help = (
        "Show which buckets live on which shard and how many rows each shard holds; "
        "'shards move --buckets A-B --to shard_N' moves buckets online (resumable); "
        "'shards init' stores the map once (migrate does it)."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        sub = parser.add_subparsers(dest="action")
        sub.add_parser(
            "init",
            help="store the bucket map once (migrate does it): contiguous ranges over "
            "the shards configured now; a complete map is never changed",
        )
        move = sub.add_parser("move", help="move a bucket range to another shard")
        move.add_argument("--buckets", required=True, help="inclusive range, e.g. 0-63")
        move.add_argument("--to", required=True, dest="target", help="target alias, e.g. shard_1")
        move.add_argument(
            "--max-buckets",
            type=int,
            default=None,
            help="copy at most this many buckets in this run (re-run to continue)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options.get("action") == "move":
            self._move(options)
        elif options.get("action") == "init":
            created = shard_map_init()
            self.stdout.write(
                f"stored {created} buckets" if created else "the map was complete: nothing changed"
            )
        self._show()

    def _move(self, options: dict[str, Any]) -> None:
        match = re.fullmatch(r"(\d+)(?:-(\d+))?", options["buckets"].strip())
        if not match:
            raise CommandError(f"--buckets must look like 0-63, got {options['buckets']!r}")
        first = int(match[1])
        last = int(match[2] or match[1])
        try:
            move = shards_move(
                first=first,
                last=last,
                target=options["target"],
                max_buckets=options["max_buckets"],
                progress=self.stdout.write,
            )
        except (MoveRefused, MoveVerificationFailed) as exc:
            raise CommandError(str(exc)) from exc
        except DatabaseError as exc:
            # Everything done so far is recorded: the same command continues the move.
            raise CommandError(
                f"the move stopped: {exc}".strip() + "\nRun the same command again to resume."
            ) from exc
        self.stdout.write(self.style.SUCCESS(f"move {move}"))

    def _show(self) -> None:
        counts = shard_row_counts()
        frozen = frozen_buckets()
        for alias, spans in bucket_ranges().items():
            text = ", ".join(f"{a}-{b}" if a != b else str(a) for a, b in spans) or "none"
            n = sum(b - a + 1 for a, b in spans)
            rows = counts.results.get(alias)
            rows_text = (
                f"{rows[0]} profiles, {rows[1]} events"
                if rows
                else f"rows unknown: {counts.failed.get(alias, 'no answer')}"
            )
            self.stdout.write(f"{alias}: {n} buckets ({text}); {rows_text}")
        if frozen:
            self.stdout.write(f"frozen (moving): {len(frozen)} buckets")
        self.stdout.write(f"{settings.STOREOPS_SHARD_BUCKETS} buckets in total")
        problems = map_problems(bucket_map())
        if problems:
            raise CommandError("\n".join(problems))
