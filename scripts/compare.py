#!/usr/bin/env python3
"""Command-line entry point of the compare stage; all logic is in lesionflow.evaluation.leaderboard.

It must never do more than parse arguments and call run_compare.
"""

import argparse
import json

from lesionflow.evaluation.leaderboard import run_compare
from lesionflow.evaluation.out_of_fold import write_out_of_fold
from lesionflow.evaluation.run_groups import read_import_records
from lesionflow.evaluation.score_leaderboard import run_regression_compare
from lesionflow.pipeline.errors import LesionflowError, exit_on_user_error
from lesionflow.reports.leaderboard_pages import write_leaderboard_pages


def _name_paths(texts: list[str], flag: str) -> dict[str, str]:
    pairs = []
    for text in texts:
        name, sep, path = text.partition("=")
        if not sep or not name or not path:
            raise LesionflowError(f"{flag} expects NAME=PATH, got {text!r}")
        pairs.append((name, path))
    names = [name for name, _ in pairs]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise LesionflowError(f"{flag} names must be unique, repeated: {duplicated}")
    return dict(pairs)


@exit_on_user_error
def main() -> None:
    """Parse the segmentation and regression runs' NAME=PATH lists, baselines, settings, ``--out``."""
    parser = argparse.ArgumentParser(description="Leaderboards of runs on their test metrics.")
    parser.add_argument(
        "--summary", nargs="+", default=[], help="NAME=PATH of each segmentation run's summary.json"
    )
    parser.add_argument(
        "--per-image", nargs="+", help="NAME=PATH of each run's per_image_test.csv (paired tests)"
    )
    parser.add_argument(
        "--score-summary", nargs="+", default=[], help="NAME=PATH of each regression run's summary.json"
    )
    parser.add_argument(
        "--per-case", nargs="+", default=[], help="NAME=PATH of each regression run's per_case_test.csv"
    )
    parser.add_argument(
        "--import-record", nargs="+", default=[], help="NAME=PATH of each external run's test_infer.json"
    )
    parser.add_argument(
        "--oof-per-image", nargs="+", default=[], help="NAME=PATH of each fold run's per_image_val.csv"
    )
    parser.add_argument(
        "--oof-lesions", nargs="+", default=[], help="NAME=PATH of each fold run's lesions_val.csv"
    )
    parser.add_argument("--baseline", default="", help="segmentation run the deltas are taken against")
    parser.add_argument("--score-baseline", default="", help="regression run the deltas are taken against")
    parser.add_argument(
        "--settings",
        required=True,
        help="the config's compare section, defaults filled, plus every run's tags "
        "({'tags': {run: [tag, ...]}}), group, seed and the settings that differ between runs, as JSON",
    )
    parser.add_argument(
        "--out", required=True, help="output folder of leaderboard[_regression][_groups].csv and .html pages"
    )
    args = parser.parse_args()
    settings = json.loads(args.settings)
    settings["imports"] = read_import_records(_name_paths(args.import_record, "--import-record"))
    summaries = _name_paths(args.summary, "--summary")
    per_image = _name_paths(args.per_image, "--per-image") if args.per_image else None
    # Each table has its own baseline: the config's, or the first run of its task.
    board = run_compare(
        summaries, args.baseline, args.out, per_image, {**settings, "baseline": args.baseline}
    )
    scores = run_regression_compare(
        _name_paths(args.score_summary, "--score-summary"),
        _name_paths(args.per_case, "--per-case"),
        args.score_baseline,
        args.out,
        {**settings, "baseline": args.score_baseline},
    )
    write_leaderboard_pages(board, scores, settings["settings"], args.out)
    write_out_of_fold(
        settings["groups"],
        _name_paths(args.oof_per_image, "--oof-per-image"),
        _name_paths(args.oof_lesions, "--oof-lesions"),
        summaries,
        settings["bootstrap"],
        args.out,
    )


if __name__ == "__main__":
    main()
