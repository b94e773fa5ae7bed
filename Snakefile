# lesionflow: data -> split -> preprocess -> train -> infer (TTA) -> tune on validation, locked
# -> evaluate -> export (predictions in each source's geometry) -> zero-Dice breakdown
# -> analysis and training-report notebooks -> leaderboard -> comparison notebook -> run views
# -> report. Regression runs (task: regression) go from train to infer_scores (TTA) -> calibrate
# on validation, locked -> evaluate_scores -> regression notebook, and into their own leaderboard.
# A run with source external imports another tool's predictions in place of train and infer; one
# with source ensemble averages its members' maps.
# Every artifact lives at results/<stage>/<content key>/; the stages are listed once, in
# lesionflow.pipeline.stages, and their keys are computed in lesionflow.pipeline.plan.

import os
import sys
from pathlib import Path

from lesionflow.pipeline.config import check_config_files, resolve_config
from lesionflow.pipeline.errors import LesionflowError, full_disk_line, is_full_disk
from lesionflow.pipeline.fingerprints import CodeBase, user_summaries_path
from lesionflow.pipeline.plan import shared_plan
from lesionflow.pipeline.results_owner import claim_results

# The built-in demo, unless a config is given on the command line (it would otherwise be
# merged into the demo's runs).
if not config:

    configfile: Path(workflow.basedir) / "config" / "config.yaml"


try:
    check_config_files(workflow.configfiles)
    CONFIG = resolve_config(config)
    # One plan per run: cluster jobs reuse the keys their Snakemake computed (lesionflow.pipeline.plan).
    # Keys cover the code each stage runs: the installed package and this workflow's scripts/notebooks.
    # Each module's parsed summary is kept in the user's cache between runs: planning parses edited ones only.
    CODE = CodeBase.installed(workflow.basedir, user_summaries_path())
    PLAN = shared_plan(CONFIG, Path.cwd(), os.environ, CODE)
except LesionflowError as err:
    sys.exit(f"lesionflow: error: {' '.join(str(err).split())}")
except OSError as err:  # planning writes its plan and caches: a full disk is said in one line
    if not is_full_disk(err):
        raise
    sys.exit(f"lesionflow: error: {full_disk_line(err)}")


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"


rule all:
    input:
        get_all_targets,
    default_target: True


# A failed job does not hide the runs that finished (with --keep-going, as the profiles set):
# they are ranked in results/compare/partial/, beside a row per failed run naming the stage and
# its log. A finished leaderboard makes that folder obsolete.
onerror:
    write_partial_leaderboard()


onsuccess:
    remove_obsolete_partial_leaderboard()


# The leaderboard and run views are not keyed: one config file owns them (see results_owner). Claimed
# when jobs are about to run (never in a dry run, nor when nothing is to be done).
onstart:
    try:
        claim_results(Path.cwd(), workflow.configfiles)
    except LesionflowError as err:
        sys.exit(f"lesionflow: error: {err}")


include: "workflow/rules/data.smk"
include: "workflow/rules/split.smk"
include: "workflow/rules/nnunet_export.smk"
include: "workflow/rules/preprocess.smk"
include: "workflow/rules/fold.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/import_predictions.smk"
include: "workflow/rules/ensemble.smk"
include: "workflow/rules/infer.smk"
include: "workflow/rules/tune.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/export.smk"
include: "workflow/rules/breakdown.smk"
include: "workflow/rules/analyse.smk"
include: "workflow/rules/infer_scores.smk"
include: "workflow/rules/calibrate.smk"
include: "workflow/rules/evaluate_scores.smk"
include: "workflow/rules/analyse_scores.smk"
include: "workflow/rules/training_report.smk"
include: "workflow/rules/compare.smk"
include: "workflow/rules/compare_report.smk"
include: "workflow/rules/run_view.smk"
include: "workflow/rules/score_run_view.smk"
