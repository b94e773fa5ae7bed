#!/usr/bin/env python3
"""Entry point of the evaluate_scores stage; all logic is in lesionflow.evaluation.score_evaluate.

It must never do more than parse arguments and call run_evaluate_scores.
"""

import argparse
import json

from lesionflow.evaluation.score_evaluate import run_evaluate_scores
from lesionflow.pipeline.errors import exit_on_user_error
from lesionflow.pipeline.provenance import recording


@exit_on_user_error
def main() -> None:
    """Parse the manifest, split, val/test scores, calibration.json, settings (JSON) and ``--out``."""
    parser = argparse.ArgumentParser(description="Apply the locked calibration; score val and test.")
    parser.add_argument("--manifest", required=True, help="manifest.csv written by the data stage")
    parser.add_argument("--split", required=True, help="split.csv written by the split stage")
    parser.add_argument("--scores-val", required=True, help="val_scores.csv written by infer_scores")
    parser.add_argument("--scores-test", required=True, help="test_scores.csv written by infer_scores")
    parser.add_argument("--calibration", required=True, help="calibration.json written by calibrate")
    parser.add_argument("--settings", required=True, help="the evaluate section of the run, as JSON")
    parser.add_argument("--out", required=True, help="output folder for per_case_*.csv and summary.json")
    args = parser.parse_args()
    with recording(args.out):
        run_evaluate_scores(
            args.manifest,
            args.split,
            args.scores_val,
            args.scores_test,
            args.calibration,
            json.loads(args.settings),
            args.out,
        )


if __name__ == "__main__":
    main()
