#!/usr/bin/env python3
"""Entry point of the import_predictions stage: parse arguments, call lesionflow.model.imported.run_import."""

import argparse
import json

from lesionflow.model.imported import run_import
from lesionflow.pipeline.errors import exit_on_user_error
from lesionflow.pipeline.provenance import recording


@exit_on_user_error
def main() -> None:
    """Parse the data stage's images.csv, the split, ``--settings``, ``--subset`` and ``--out``."""
    parser = argparse.ArgumentParser(description="Import another tool's predictions of one subset.")
    parser.add_argument("--images", required=True, help="images.csv of the data stage (each image's shape)")
    parser.add_argument("--split", required=True, help="split.csv of the split stage")
    parser.add_argument("--settings", required=True, help='{"external": {"predictions": folder, "label": 1}}')
    parser.add_argument("--subset", required=True, choices=("val", "test"))
    parser.add_argument("--out", required=True, help="output folder")
    args = parser.parse_args()
    # A folder's problems (missing or extra ids, shapes, label values) are reported all at once.
    with recording(args.out, stage="import_predictions", part=args.subset):
        run_import(args.images, args.split, json.loads(args.settings), args.subset, args.out)


if __name__ == "__main__":
    main()
