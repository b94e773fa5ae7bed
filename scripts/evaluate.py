#!/usr/bin/env python3
"""Command-line entry point of the evaluate stage; all logic is in lesionflow.evaluation.evaluate.

It must never do more than parse arguments and call run_evaluate_stage.
"""

import argparse
import json

from lesionflow.evaluation.class_evaluate import run_evaluate_stage
from lesionflow.pipeline.errors import exit_on_user_error
from lesionflow.pipeline.provenance import recording


@exit_on_user_error
def main() -> None:
    """Parse the manifest, split, val/test probabilities, locked.json, settings and ``--out``."""
    parser = argparse.ArgumentParser(description="Apply locked settings; score val and test.")
    parser.add_argument("--manifest", required=True, help="manifest.csv written by the data stage")
    parser.add_argument("--split", required=True, help="split.csv written by the split stage")
    parser.add_argument("--probs-val", required=True, help="val.npz written by the infer stage")
    parser.add_argument("--probs-test", required=True, help="test.npz written by the infer stage")
    parser.add_argument("--locked", required=True, help="locked.json written by the tune stage")
    parser.add_argument("--tiles-manifest", help="manifest.csv of the preprocess stage (its items)")
    parser.add_argument("--tiles-split", help="split.csv of the preprocess stage")
    parser.add_argument("--tiles-images", help="images.csv of the preprocess stage (scales)")
    parser.add_argument("--tiles-val", help="val_tiles.npz written by the infer stage")
    parser.add_argument("--tiles-test", help="test_tiles.npz written by the infer stage")
    parser.add_argument("--fusion", help="fusion.json written by the tune stage")
    parser.add_argument("--presence-val", help="val_presence.csv written by the infer stage")
    parser.add_argument("--presence-test", help="test_presence.csv written by the infer stage")
    parser.add_argument("--settings", default="{}", help="the evaluate section, as JSON")
    parser.add_argument("--out", required=True, help="output folder for the per-image tables")
    args = parser.parse_args()
    names = ("manifest", "split", "images", "val", "test")
    given = {name: getattr(args, f"tiles_{name}") for name in names}
    if any(given.values()) and not all(given.values()):
        parser.error("give all five --tiles-* arguments, or none")
    presence = {"fusion": args.fusion, "val": args.presence_val, "test": args.presence_test}
    if any(presence.values()) and not all(presence.values()):
        parser.error("give --fusion, --presence-val and --presence-test together, or none")
    with recording(args.out):
        run_evaluate_stage(
            args.manifest,
            args.split,
            args.probs_val,
            args.probs_test,
            args.locked,
            json.loads(args.settings),
            args.out,
            tiles=given if all(given.values()) else None,
            presence=presence if all(presence.values()) else None,
        )


if __name__ == "__main__":
    main()
