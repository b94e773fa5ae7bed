#!/usr/bin/env python3
"""Command-line entry point of the compare stage; all logic is in lesionflow.evaluation.leaderboard.

It must never do more than parse arguments and call run_compare.
"""

import argparse
import json

from lesionflow.evaluation.leaderboard import run_compare
from lesionflow.pipeline.errors import LesionflowError, exit_on_user_error


def _name_paths(texts: list[str], flag: str) -> dict[str, str]:
    pairs = []
    for text in texts:
        name, sep, path = text.partition("=")
        if not sep or not name or not path:
            raise LesionflowError(f"{flag} expects NAME=PATH, got {text!r}")
        pairs.append((name, path))
    names = [name for name, _ in pairs]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise LesionflowError(f"{flag} names must be unique, repeated: {duplicated}")
    return dict(pairs)


@exit_on_user_error
def main() -> None:
    """Parse ``--summary`` and ``--per-image`` NAME=PATH lists, ``--baseline``, settings, ``--out``."""
    parser = argparse.ArgumentParser(description="Leaderboard of runs on their test metrics.")
    parser.add_argument("--summary", nargs="+", required=True, help="NAME=PATH of each run's summary.json")
    parser.add_argument(
        "--per-image", nargs="+", help="NAME=PATH of each run's per_image_test.csv (paired tests)"
    )
    parser.add_argument("--baseline", required=True, help="run name the deltas are taken against")
    parser.add_argument(
        "--settings",
        required=True,
        help="the config's compare section, defaults filled, plus every run's tags "
        "({'tags': {run: [tag, ...]}}), as JSON",
    )
    parser.add_argument("--out", required=True, help="output folder for leaderboard.csv and .png")
    args = parser.parse_args()
    summaries = _name_paths(args.summary, "--summary")
    per_image = _name_paths(args.per_image, "--per-image") if args.per_image else None
    run_compare(summaries, args.baseline, args.out, per_image, json.loads(args.settings))


if __name__ == "__main__":
    main()
