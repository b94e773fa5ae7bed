#!/usr/bin/env python3
"""Entry point of the preprocess stage: parse arguments, call lesionflow.data.preprocess.run_preprocess."""

import argparse
import json

from lesionflow.data.preprocess import run_preprocess
from lesionflow.pipeline.errors import exit_on_user_error
from lesionflow.pipeline.provenance import recording


@exit_on_user_error
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--manifest", required=True, help="manifest.csv of the data stage")
    parser.add_argument("--split", required=True, help="split.csv of the source images")
    parser.add_argument("--settings", required=True, help='JSON: {"preprocess": ...}')
    parser.add_argument("--out", required=True, help="output folder")
    args = parser.parse_args()
    with recording(args.out):
        run_preprocess(args.manifest, args.split, json.loads(args.settings), args.out)


if __name__ == "__main__":
    main()
