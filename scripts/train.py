#!/usr/bin/env python3
"""Entry point of the train stage: parse arguments, call lesionflow.train.run_train."""

import argparse
import json

from lesionflow.errors import exit_on_user_error
from lesionflow.train import run_train


@exit_on_user_error
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--manifest", required=True, help="manifest.csv of the dataset")
    parser.add_argument("--split", required=True, help="split.csv (train / val / test)")
    parser.add_argument("--settings", required=True, help='JSON: {"model": ..., "train": ...}')
    parser.add_argument("--out", required=True, help="output folder of the train artifacts")
    args = parser.parse_args()
    run_train(args.manifest, args.split, json.loads(args.settings), args.out)


if __name__ == "__main__":
    main()
