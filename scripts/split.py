#!/usr/bin/env python3
"""Command-line entry point of the split stage; all logic is in lesionflow.data.split.

It must never do more than parse arguments and call run_split.
"""

import argparse
import json

from lesionflow.data.split import run_split
from lesionflow.pipeline.errors import exit_on_user_error
from lesionflow.pipeline.provenance import recording


@exit_on_user_error
def main() -> None:
    """Parse ``--manifest``, ``--settings`` (the ``split`` section as JSON) and ``--out``."""
    parser = argparse.ArgumentParser(description="Split images into train, val and test.")
    parser.add_argument("--manifest", required=True, help="manifest.csv written by the data stage")
    parser.add_argument("--settings", required=True, help="the split section of the run, as JSON")
    parser.add_argument("--out", required=True, help="output folder for split.csv and summary")
    args = parser.parse_args()
    with recording(args.out):
        run_split(args.manifest, json.loads(args.settings), args.out)


if __name__ == "__main__":
    main()
