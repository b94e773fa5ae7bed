#!/usr/bin/env python3
"""Command-line entry point of the data stage; all logic is in lesionflow.data.dataset.

It must never do more than parse arguments and call run_data (exit_on_user_error prints a
manifest's problems one per line).
"""

import argparse
import json

from lesionflow.data.dataset import run_data
from lesionflow.pipeline.errors import exit_on_user_error
from lesionflow.pipeline.provenance import recording


@exit_on_user_error
def main() -> None:
    """Parse ``--settings`` (the resolved ``data`` section as JSON) and ``--out``."""
    parser = argparse.ArgumentParser(description="Generate or validate the dataset.")
    parser.add_argument("--settings", required=True, help="the data section of the run, as JSON")
    parser.add_argument("--out", required=True, help="output folder for manifest.csv and summary")
    args = parser.parse_args()
    with recording(args.out):
        run_data(json.loads(args.settings), args.out)


if __name__ == "__main__":
    main()
