#!/usr/bin/env python3
"""Entry point of the train stage: parse arguments, call lesionflow.model.train.run_train.

A rerun with the same arguments resumes from <out>/resume/checkpoint.pt when a previous attempt
left one. Exit codes: 0 done (artifacts written, resume folder removed); 2 a user error, in one
line; 143 stopped by SIGTERM, 138 by SIGUSR1 (128 + the signal number), the last finished epoch's
checkpoint kept for the retry; 1 anything else (a traceback).
"""

import argparse
import json

from lesionflow.model.interrupt import exit_on_interrupt
from lesionflow.model.train import run_train
from lesionflow.pipeline.errors import exit_on_user_error
from lesionflow.pipeline.provenance import recording


@exit_on_user_error
@exit_on_interrupt
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--manifest", required=True, help="manifest.csv of the dataset")
    parser.add_argument("--split", required=True, help="split.csv (train / val / test)")
    parser.add_argument("--settings", required=True, help='JSON: {"model": ..., "train": ...}')
    parser.add_argument("--out", required=True, help="output folder of the train artifacts")
    args = parser.parse_args()
    with recording(args.out):
        run_train(args.manifest, args.split, json.loads(args.settings), args.out)


if __name__ == "__main__":
    main()
