"""``uv run python -m bench NAME [--reps N]``: run a scenario from bench/scenarios/."""

from __future__ import annotations

import argparse
import importlib
import json
import pkgutil
import sys

from bench import harness, scenarios


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
    args = parser.parse_args(argv)
    if args.rebuild_template:
        harness.build_template(force=True)
    module = importlib.import_module(f"bench.scenarios.{args.scenario}")
    run = harness.Run(scenario=args.scenario)
    module.run(run, reps=args.reps)
    print(run.report())
    path = run.save()
    print(f"\nJSON: {path}")
    print(json.dumps(run.to_json()))
    return 0 if all(r.met is not False for r in run.ratios) else 1


if __name__ == "__main__":
    sys.exit(main())
