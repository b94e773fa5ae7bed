#!/usr/bin/env python3
"""Command-line entry point of the compare stage; all logic is in lesionflow.compare.

It must never do more than parse arguments and call run_compare.
"""

import argparse

from lesionflow.compare import run_compare
from lesionflow.errors import LesionflowError, exit_on_user_error


def _name_path(text: str) -> tuple[str, str]:
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise LesionflowError(f"--summary expects NAME=PATH, got {text!r}")
    return name, path


@exit_on_user_error
def main() -> None:
    """Parse ``--summary NAME=PATH ...``, ``--baseline NAME`` and ``--out``."""
    parser = argparse.ArgumentParser(description="Leaderboard of runs on their test metrics.")
    parser.add_argument(
        "--summary", nargs="+", required=True, help="NAME=PATH of each run's summary.json"
    )
    parser.add_argument("--baseline", required=True, help="run name the deltas are taken against")
    parser.add_argument("--out", required=True, help="output folder for leaderboard.csv and .png")
    args = parser.parse_args()
    pairs = [_name_path(text) for text in args.summary]
    names = [name for name, _ in pairs]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise LesionflowError(f"--summary names must be unique, repeated: {duplicated}")
    run_compare(dict(pairs), args.baseline, args.out)


if __name__ == "__main__":
    main()
