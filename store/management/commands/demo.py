from __future__ import annotations

from argparse import ArgumentParser
from typing import Any

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandParser

from store.services.accounts import demo_user_ensure
from store.services.seeding import SeedPlan, catalog_is_empty, seed_demo
from store.sharding import check_shard_map


class Command(BaseCommand):
    help = "Migrate every database, seed demo data if empty, print a login, serve on :8000."

    def add_arguments(self, parser: CommandParser | ArgumentParser) -> None:
        parser.add_argument(
            "--addrport",
            default="127.0.0.1:8000",
            help="Where to serve, as for runserver: [ADDRESS:]PORT (default 127.0.0.1:8000).",
        )
        parser.add_argument("--username", default="ops")
        parser.add_argument(
            "--password",
            default=settings.STOREOPS_DEMO_PASSWORD,
            help="Demo password (default: STOREOPS_DEMO_PASSWORD, else a random one).",
        )
        parser.add_argument("--no-serve", action="store_true", help="Set up, then exit.")

    def handle(self, *args: Any, **options: Any) -> None:
        self.prepare()
        user, password = demo_user_ensure(
            username=options["username"], password=options["password"]
        )
        self.stdout.write(
            self.style.SUCCESS(
                f"\n  Store Ops Console: http://{options['addrport']}/\n"
                f"  Log in as {user.username!r} with password {password!r}\n"
            )
        )
        if not options["no_serve"]:
            call_command("runserver", options["addrport"], use_reloader=False)

    def prepare(self) -> None:
        for alias in settings.DATABASES:
            if alias.startswith("replica_"):
                continue  # replicas follow the primary; nothing to migrate there
            call_command("migrate", database=alias, interactive=False, verbosity=0)
        check_shard_map()  # the shards configured can serve the stored bucket map
        if catalog_is_empty():
            self.stdout.write("Seeding demo data ...")
            result = seed_demo(plan=SeedPlan())
            self.stdout.write(", ".join(f"{n:,} {k}" for k, n in result.counts.items()))
