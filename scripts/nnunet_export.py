#!/usr/bin/env python3
"""Command-line entry point of the nnU-Net export; all logic is in lesionflow.data.nnunet_export.

It must never do more than parse arguments and call export_nnunet_dataset.
"""

import argparse
import json

from lesionflow.data.nnunet_export import SECTION, SETTING_KEYS, export_nnunet_dataset
from lesionflow.pipeline.errors import exit_on_user_error
from lesionflow.pipeline.provenance import recording
from lesionflow.pipeline.settings import complete_section


@exit_on_user_error
def main() -> None:
    """Parse ``--manifest``, ``--split``, ``--settings`` (the export settings as JSON) and ``--out``."""
    parser = argparse.ArgumentParser(description="Export the dataset and split as an nnU-Net v2 raw dataset.")
    parser.add_argument("--manifest", required=True, help="manifest.csv written by the data stage")
    parser.add_argument("--split", required=True, help="split.csv written by the split stage")
    parser.add_argument(
        "--settings", required=True,
        help='{"nnunet_export": {"dataset_id": 1-999, "dataset_name": "..."}} as JSON',
    )  # fmt: skip
    parser.add_argument("--out", required=True, help="output folder for Dataset<id>_<name>/ and export.json")
    args = parser.parse_args()
    settings = complete_section(json.loads(args.settings), SECTION, SETTING_KEYS)
    with recording(args.out):
        export_nnunet_dataset(args.manifest, args.split, settings, args.out)


if __name__ == "__main__":
    main()
