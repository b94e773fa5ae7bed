#!/usr/bin/env python3
"""Entry point of the fold stage: parse arguments, call lesionflow.data.folds.run_fold."""

import argparse
import json

from lesionflow.data.folds import run_fold
from lesionflow.pipeline.errors import exit_on_user_error
from lesionflow.pipeline.provenance import recording


@exit_on_user_error
def main() -> None:
    """Parse the split, the preprocess stage's item split and image table, ``--settings`` and ``--out``."""
    parser = argparse.ArgumentParser(description="Write one fold's subsets of a k-fold split.")
    parser.add_argument("--split", required=True, help="split.csv of the split stage (with its fold column)")
    parser.add_argument("--items", required=True, help="split.csv of the preprocess stage (its items)")
    parser.add_argument("--images", required=True, help="images.csv of the preprocess stage")
    parser.add_argument("--settings", required=True, help='{"fold": k, "score_bins": [...]} as JSON')
    parser.add_argument("--out", required=True, help="output folder")
    args = parser.parse_args()
    with recording(args.out):
        run_fold(args.split, args.items, args.images, json.loads(args.settings), args.out)


if __name__ == "__main__":
    main()
