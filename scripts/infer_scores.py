#!/usr/bin/env python3
"""Entry point of the infer_scores stage: parse arguments, call score_infer.run_score_infer."""

import argparse
import json

from lesionflow.model.score_infer import run_score_infer
from lesionflow.pipeline.errors import exit_on_user_error
from lesionflow.pipeline.provenance import recording


@exit_on_user_error
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", required=True, help="images.csv of the preprocess stage")
    parser.add_argument("--preprocess", required=True, help="preprocess.json of that stage")
    parser.add_argument("--model", required=True, help="model.pt written by the train stage")
    parser.add_argument("--settings", required=True, help='JSON: {"infer": ...}')
    parser.add_argument("--subset", required=True, choices=["val", "test"])
    parser.add_argument("--out", required=True, help="output folder of the predicted scores")
    args = parser.parse_args()
    settings = json.loads(args.settings)
    with recording(args.out, part=args.subset):
        run_score_infer(args.images, args.preprocess, args.model, settings, args.subset, args.out)


if __name__ == "__main__":
    main()
