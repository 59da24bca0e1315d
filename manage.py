#!/usr/bin/env python
"""Django's command-line utility for administrative tasks."""

import os
import sys


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    # Commands (bulk seeding, rollup rebuilds) run single statements longer than any
    # request's deadline; web processes (gunicorn, tests) keep theirs.
    os.environ.setdefault("STOREOPS_STATEMENT_TIMEOUT", "0")
    if sys.argv[1:2] == ["demo"]:
        # The demo is the local playground: debug pages on, unless told otherwise.
        os.environ.setdefault("DEBUG", "true")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
