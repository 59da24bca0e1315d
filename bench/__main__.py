"""``uv run python -m bench NAME [--reps N]``: run a scenario from bench/scenarios/."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import pkgutil
import sys

from bench import harness, scenarios

# The bench process itself seeds, rebuilds and verifies rollups (whole-table
# statements), like manage.py's commands: no request deadline. The web servers it
# starts keep theirs (the variable is dropped from their environment).
os.environ.setdefault("STOREOPS_STATEMENT_TIMEOUT", "0")


def main(argv: list[str] | None = None) -> int:
    names = sorted(m.name for m in pkgutil.iter_modules(scenarios.__path__))
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("scenario", choices=names)
    parser.add_argument(
        "--reps", type=int, default=None, help="timed repetitions (default: the scenario's own)"
    )
    parser.add_argument(
        "--rebuild-template",
        action="store_true",
        help="reseed the 1M-product template database first",
    )
    args, rest = parser.parse_known_args(argv)
    module = importlib.import_module(f"bench.scenarios.{args.scenario}")
    # A scenario may take options of its own (``add_arguments``), passed to its run().
    options: dict[str, object] = {}
    if hasattr(module, "add_arguments"):
        own = argparse.ArgumentParser(prog=f"python -m bench {args.scenario}")
        module.add_arguments(own)
        options = vars(own.parse_args(rest))
    elif rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    if args.rebuild_template:
        harness.build_template(force=True)
    run = harness.Run(scenario=args.scenario)
    module.run(run, reps=args.reps, **options)
    print(run.report())
    path = run.save()
    print(f"\nJSON: {path}")
    print(json.dumps(run.to_json()))
    return 0 if all(r.met is not False for r in run.ratios) else 1


if __name__ == "__main__":
    sys.exit(main())
