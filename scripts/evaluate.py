#!/usr/bin/env python3
"""Command-line entry point of the evaluate stage; all logic is in lesionflow.evaluate.

It must never do more than parse arguments and call run_evaluate.
"""

import argparse
import json

from lesionflow.errors import exit_on_user_error
from lesionflow.evaluate import run_evaluate


@exit_on_user_error
def main() -> None:
    """Parse the manifest, split, val/test probabilities, locked.json, settings and ``--out``."""
    parser = argparse.ArgumentParser(description="Apply locked settings; score val and test.")
    parser.add_argument("--manifest", required=True, help="manifest.csv written by the data stage")
    parser.add_argument("--split", required=True, help="split.csv written by the split stage")
    parser.add_argument("--probs-val", required=True, help="val.npz written by the infer stage")
    parser.add_argument("--probs-test", required=True, help="test.npz written by the infer stage")
    parser.add_argument("--locked", required=True, help="locked.json written by the tune stage")
    parser.add_argument("--settings", default="{}", help="the evaluate section, as JSON")
    parser.add_argument("--out", required=True, help="output folder for the per-image tables")
    args = parser.parse_args()
    run_evaluate(
        args.manifest,
        args.split,
        args.probs_val,
        args.probs_test,
        args.locked,
        json.loads(args.settings),
        args.out,
    )


if __name__ == "__main__":
    main()
