#!/usr/bin/env python3
"""Entry point of the ensemble stage: parse arguments, call lesionflow.model.ensemble.run_ensemble."""

import argparse

from lesionflow.model.ensemble import run_ensemble
from lesionflow.pipeline.errors import exit_on_user_error
from lesionflow.pipeline.provenance import recording


@exit_on_user_error
def main() -> None:
    """Parse ``--members`` (each member's infer folder), ``--subset`` and ``--out``."""
    parser = argparse.ArgumentParser(description="Average the probability maps of an ensemble's members.")
    parser.add_argument("--members", nargs="+", required=True, help="each member's infer folder")
    parser.add_argument("--subset", required=True, choices=("val", "test"))
    parser.add_argument("--out", required=True, help="output folder")
    args = parser.parse_args()
    with recording(args.out, stage="ensemble", part=args.subset):
        run_ensemble(args.members, args.subset, args.out)


if __name__ == "__main__":
    main()
