#!/usr/bin/env python3
"""Command-line entry point of the data stage; all logic is in lesionflow.data.dataset.

It must never do more than parse arguments, call run_data, and print a manifest's problems one
per line.
"""

import argparse
import json
import sys

from lesionflow.data.dataset import run_data
from lesionflow.data.manifest_check import ManifestProblems
from lesionflow.pipeline.errors import exit_on_user_error


@exit_on_user_error
def main() -> None:
    """Parse ``--settings`` (the resolved ``data`` section as JSON) and ``--out``."""
    parser = argparse.ArgumentParser(description="Generate or validate the dataset.")
    parser.add_argument("--settings", required=True, help="the data section of the run, as JSON")
    parser.add_argument("--out", required=True, help="output folder for manifest.csv and summary")
    args = parser.parse_args()
    try:
        run_data(json.loads(args.settings), args.out)
    except ManifestProblems as err:
        # exit_on_user_error joins a message into one line, which would run every problem of a
        # manifest together; print the count line as the error and each problem on its own line.
        print(f"lesionflow: error: {err.lines[0]}", file=sys.stderr)
        for line in err.lines[1:]:
            print(f"  {line}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
