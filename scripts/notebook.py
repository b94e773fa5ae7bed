#!/usr/bin/env python3
"""Command-line entry point of every notebook stage (analyse, training report, compare report).

It must never do more than parse arguments and call lesionflow.reports.notebook.run_notebook.
"""

import argparse
import json
from pathlib import Path

from lesionflow.pipeline.errors import LesionflowError, exit_on_user_error
from lesionflow.pipeline.provenance import recording
from lesionflow.reports.notebook import run_notebook

# The workflow's own notebooks, beside this script's folder: rules name them (analysis, compare, ...)
# rather than give this machine's path to them, which the Snakemake report would show.
WORKFLOW_NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


@exit_on_user_error
def main() -> None:
    """Parse ``--notebook``, ``--parameters`` (JSON) and ``--out``; execute and export."""
    parser = argparse.ArgumentParser(description="Execute a parameterised notebook; export HTML.")
    parser.add_argument(
        "--notebook", required=True, help="the notebook to execute: a .ipynb file, or a name in notebooks/"
    )
    parser.add_argument("--parameters", required=True, help="JSON object of notebook parameters")
    parser.add_argument("--out", required=True, help="the stage's output folder")
    args = parser.parse_args()
    try:
        parameters = json.loads(args.parameters)
    except json.JSONDecodeError as err:
        raise LesionflowError(f"--parameters: not valid JSON ({err})") from None
    if not isinstance(parameters, dict):
        raise LesionflowError("--parameters: expected a JSON object of notebook parameters")
    with recording(args.out):
        named = WORKFLOW_NOTEBOOKS / f"{args.notebook}.ipynb"
        run_notebook(args.notebook if args.notebook.endswith(".ipynb") else named, parameters, args.out)


if __name__ == "__main__":
    main()
