#!/usr/bin/env python3
"""Command-line entry point of the zero-Dice breakdown; all logic is in lesionflow.evaluation.breakdown.

It must never do more than parse arguments and call run_breakdown.
"""

import argparse

from lesionflow.evaluation.breakdown import run_breakdown
from lesionflow.pipeline.errors import exit_on_user_error
from lesionflow.pipeline.provenance import recording


@exit_on_user_error
def main() -> None:
    """Parse ``--per-image`` (a per_image_*.csv) and ``--out``."""
    parser = argparse.ArgumentParser(description="Break images with Dice 0 down into cases.")
    parser.add_argument("--per-image", required=True, help="per_image_test.csv from evaluate")
    parser.add_argument("--out", required=True, help="output folder for the zero-Dice tables")
    args = parser.parse_args()
    with recording(args.out):
        run_breakdown(args.per_image, args.out)


if __name__ == "__main__":
    main()
