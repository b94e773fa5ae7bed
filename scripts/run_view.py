#!/usr/bin/env python3
"""Build the named view results/runs/<name>/ of one run's keyed artifacts."""

import argparse
import json

from lesionflow.pipeline.errors import exit_on_user_error
from lesionflow.reports.views import write_run_view


@exit_on_user_error
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--record", required=True, help="JSON: run name, keys, settings")
    parser.add_argument("--artifacts", nargs="+", required=True, help="label=path pairs")
    parser.add_argument("--out", required=True, help="the run's view folder")
    args = parser.parse_args()
    artifacts = dict(pair.split("=", 1) for pair in args.artifacts)
    write_run_view(json.loads(args.record), artifacts, args.out)


if __name__ == "__main__":
    main()
