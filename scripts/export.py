#!/usr/bin/env python3
"""Command-line entry point of the export stage; all logic is in lesionflow.evaluation.export.

It must never do more than parse arguments and call run_export.
"""

import argparse

from lesionflow.evaluation.export import run_export
from lesionflow.pipeline.errors import exit_on_user_error
from lesionflow.pipeline.provenance import recording


@exit_on_user_error
def main() -> None:
    """Parse the manifest, the val/test probabilities, locked.json and ``--out``."""
    parser = argparse.ArgumentParser(description="Write locked masks and maps in each source's geometry.")
    parser.add_argument("--manifest", required=True, help="manifest.csv written by the data stage")
    parser.add_argument("--probs-val", required=True, help="val.npz written by the infer stage")
    parser.add_argument("--probs-test", required=True, help="test.npz written by the infer stage")
    parser.add_argument("--locked", required=True, help="locked.json written by the tune stage")
    parser.add_argument("--out", required=True, help="output folder")
    args = parser.parse_args()
    with recording(args.out):
        run_export(args.manifest, {"val": args.probs_val, "test": args.probs_test}, args.locked, args.out)


if __name__ == "__main__":
    main()
