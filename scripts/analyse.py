#!/usr/bin/env python3
"""Run the parameterised analysis notebook for one run; write analysis.ipynb and analysis.html."""

import argparse
import json

from lesionflow.analysis import run_analyse
from lesionflow.errors import LesionflowError, exit_on_user_error


@exit_on_user_error
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--notebook", required=True, help="the notebook to execute")
    parser.add_argument("--parameters", required=True, help="JSON object of notebook parameters")
    parser.add_argument("--out", required=True, help="the stage's output folder")
    args = parser.parse_args()
    try:
        parameters = json.loads(args.parameters)
    except json.JSONDecodeError as err:
        raise LesionflowError(f"--parameters: not valid JSON ({err})") from None
    if not isinstance(parameters, dict):
        raise LesionflowError("--parameters: expected a JSON object of notebook parameters")
    run_analyse(args.notebook, parameters, args.out)


if __name__ == "__main__":
    main()
