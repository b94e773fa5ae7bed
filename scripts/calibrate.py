#!/usr/bin/env python3
"""Command-line entry point of the calibrate stage; all logic is in lesionflow.evaluation.calibration.

It must never do more than parse arguments and call run_calibrate (which reads validation only).
"""

import argparse
import json

from lesionflow.evaluation.calibration import run_calibrate
from lesionflow.pipeline.errors import exit_on_user_error
from lesionflow.pipeline.provenance import recording


@exit_on_user_error
def main() -> None:
    """Parse ``--manifest``, ``--split``, ``--scores``, ``--settings`` (JSON) and ``--out``."""
    parser = argparse.ArgumentParser(description="Fit the score calibration on validation; lock it.")
    parser.add_argument("--manifest", required=True, help="manifest.csv written by the data stage")
    parser.add_argument("--split", required=True, help="split.csv written by the split stage")
    parser.add_argument("--scores", required=True, help="val_scores.csv written by the infer_scores stage")
    parser.add_argument("--settings", required=True, help="the tune section of the run, as JSON")
    parser.add_argument("--out", required=True, help="output folder for calibration.json")
    args = parser.parse_args()
    with recording(args.out):
        run_calibrate(args.manifest, args.split, args.scores, json.loads(args.settings), args.out)


if __name__ == "__main__":
    main()
