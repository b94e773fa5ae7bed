#!/usr/bin/env python3
"""Command-line entry point of the tune stage; all logic is in lesionflow.evaluation.tune.

It must never do more than parse arguments and call run_tune_stage (which reads validation only).
"""

import argparse
import json

from lesionflow.evaluation.class_tune import run_tune_stage
from lesionflow.pipeline.errors import exit_on_user_error
from lesionflow.pipeline.provenance import recording


@exit_on_user_error
def main() -> None:
    """Parse ``--manifest``, ``--split``, ``--probs``, ``--settings`` (JSON) and ``--out``."""
    parser = argparse.ArgumentParser(description="Tune post-processing on validation; lock it.")
    parser.add_argument("--manifest", required=True, help="manifest.csv written by the data stage")
    parser.add_argument("--split", required=True, help="split.csv written by the split stage")
    parser.add_argument("--probs", required=True, help="val.npz written by the infer stage")
    parser.add_argument("--settings", required=True, help="the tune section of the run, as JSON")
    parser.add_argument("--presence", help="val_presence.csv of the infer stage (for fusion.json)")
    parser.add_argument("--out", required=True, help="output folder for locked.json")
    args = parser.parse_args()
    with recording(args.out):
        settings = json.loads(args.settings)
        run_tune_stage(args.manifest, args.split, args.probs, settings, args.out, args.presence)


if __name__ == "__main__":
    main()
