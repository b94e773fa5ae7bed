# Input functions and the run-name -> key mapping. Keys themselves come from lesionflow.pipeline.plan.

import json
import os
import re

from lesionflow.evaluation.artifact_names import FILE_NAMES as EVALUATION_FILES
from lesionflow.pipeline.plan import settings_json
from lesionflow.pipeline.stages import NOTEBOOK_STAGES, STAGES, figures

envvars:
    "PATH",
    "LESIONFLOW_PLAN",


REPO = Path(workflow.basedir)
# Notebooks and their figures come from the stage registry (lesionflow.pipeline.stages).
NOTEBOOKS = {name: str(REPO / STAGES[name].notebook_path) for name in NOTEBOOK_STAGES}
# Stage entry points in scripts/ are called by name, run by this interpreter.
os.environ["PATH"] = os.pathsep.join(
    [str(REPO / "scripts"), str(Path(sys.executable).parent), os.environ["PATH"]]
)


wildcard_constraints:
    key="[0-9a-f]{12}",
    subset="val|test",
    name="[A-Za-z0-9][A-Za-z0-9_.-]*",


def get_input(stage, upstream, filename):
    """Input function: `filename` of the `upstream` artifact that the `stage` job reads."""

    def artifact(wildcards):
        return f"results/{upstream}/{PLAN.upstream(stage, wildcards.key, upstream)}/{filename}"

    return artifact


def get_settings(stage):
    """Params function: the resolved settings of the `stage` job, as JSON."""
    return lambda wildcards: settings_json(PLAN, stage, wildcards.key)


def get_run_resource(stage, what, grows=False):
    """The `resources` entry of the first run whose `stage` job has this key.

    With `grows`, the value is multiplied by the attempt number, so a job that ran out of
    memory or time is retried with more (Snakemake's --retries).
    """

    def resource(wildcards, attempt):
        name = PLAN.runs_with(stage, wildcards.key)[0]
        value = CONFIG.runs[name]["resources"][what]
        if value is None:
            return ""  # e.g. no GPU model asked for: an empty resource is left out of sbatch
        return value * attempt if grows else value

    return resource


def get_figures(stage, folder, ext="png"):
    """The figure files (PNG or SVG) a notebook stage writes into `folder` (which may hold {key})."""
    return [f"{folder}/figures/{name}.{ext}" for name in figures(stage)]


def get_notebook_parameters(stage, title):
    """Papermill parameters of a notebook job: its input files, figures folder and settings."""

    def parameters(wildcards, input, output):
        files = {name: os.path.abspath(path) for name, path in input.items() if name != "notebook"}
        figures_dir = os.path.join(os.path.abspath(os.path.dirname(output.html)), "figures")
        if stage == "compare_report":
            return json.dumps({"title": title, **files, "figures_dir": figures_dir, "baseline": PLAN.baseline})
        settings = PLAN.job(stage, wildcards.key).settings["analyse"]
        runs = ", ".join(PLAN.runs_with(stage, wildcards.key))
        heading = f"{title}: {runs} ({wildcards.key})"
        return json.dumps({"title": heading, **files, "figures_dir": figures_dir, **settings})

    return parameters


def names_pattern(names):
    """A wildcard constraint matching exactly these run names (and nothing when there are none)."""
    return "|".join(re.escape(name) for name in names) or "(?!)"


def _figure_artifacts(folders, stages):
    return {
        f"figure_{name}_{ext}": f"{folders[stage]}/figures/{name}.{ext}"
        for stage in stages
        for name in figures(stage)
        for ext in ("png", "svg")
    }


def get_score_run_artifacts(wildcards):
    """Every artifact a regression run's view links to, by label."""
    folders = PLAN.run_folders(wildcards.name)
    return {
        "split_summary": f"{folders['split']}/split_summary.csv",
        "metrics_by_epoch": f"{folders['train']}/metrics_by_epoch.csv",
        "train_summary": f"{folders['train']}/train_summary.json",
        "calibration": f"{folders['calibrate']}/calibration.json",
        "per_case_test": f"{folders['evaluate_scores']}/per_case_test.csv",
        "summary": f"{folders['evaluate_scores']}/summary.json",
        "regression": f"{folders['analyse_scores']}/regression.html",
        "regression_notebook": f"{folders['analyse_scores']}/regression.ipynb",
        "training_report": f"{folders['training_report']}/training_report.html",
        "training_report_notebook": f"{folders['training_report']}/training_report.ipynb",
        **_figure_artifacts(folders, ("analyse_scores", "training_report")),
    }


def get_run_artifacts(wildcards):
    """Every artifact a segmentation run's view links to, by label (building them builds the run's branch)."""
    folders = PLAN.run_folders(wildcards.name)
    return {
        "split_summary": f"{folders['split']}/split_summary.csv",
        "metrics_by_epoch": f"{folders['train']}/metrics_by_epoch.csv",
        "train_summary": f"{folders['train']}/train_summary.json",
        "locked": f"{folders['tune']}/locked.json",
        "per_image_test": f"{folders['evaluate']}/per_image_test.csv",
        "lesions_test": f"{folders['evaluate']}/lesions_test.csv",
        "summary": f"{folders['evaluate']}/summary.json",
        "export": f"{folders['export']}/export.json",
        "zero_dice_summary": f"{folders['breakdown']}/zero_dice_summary.csv",
        "zero_dice": f"{folders['breakdown']}/zero_dice.json",
        "analysis": f"{folders['analyse']}/analysis.html",
        "analysis_notebook": f"{folders['analyse']}/analysis.ipynb",
        "training_report": f"{folders['training_report']}/training_report.html",
        "training_report_notebook": f"{folders['training_report']}/training_report.ipynb",
        **_figure_artifacts(folders, ("analyse", "training_report")),
    }


def get_run_record(wildcards):
    """The run's resolved settings and keys, as JSON for its index."""
    return json.dumps(
        {
            "run": wildcards.name,
            "keys": PLAN.runs[wildcards.name],
            "dataset_fingerprint": PLAN.dataset_fingerprint,
            "settings": CONFIG.runs[wildcards.name],
            "data": CONFIG.data,
            "split": CONFIG.split,
        },
        sort_keys=True,
    )


def get_run_keys(wildcards):
    """The run's key per stage, for report captions."""
    return PLAN.runs[wildcards.name]


def get_evaluations(filename, stage="evaluate"):
    """`filename` of the `stage` job (evaluate, or evaluate_scores) of every run that has one, by
    run name, in config order."""
    return lambda wildcards: {
        name: f"results/{stage}/{PLAN.runs[name][stage]}/{filename}" for name in PLAN.runs_of(stage)
    }


# The evaluate files the leaderboard ranks by, per compare.level.
RANKED_FILES = {
    "summary": EVALUATION_FILES[CONFIG.compare["level"]]["summary"],
    "per_image": EVALUATION_FILES[CONFIG.compare["level"]]["per_item"].format("test"),
}


def get_evaluation_files(filename, stage="evaluate"):
    """Every run's `stage` `filename`, as a list (an input that must exist, one per run)."""
    return lambda wildcards: list(get_evaluations(filename, stage)(wildcards).values())


def get_labelled(filename, stage="evaluate", flag=None):
    """`run=path` pairs of every run's `stage` `filename`, for entry points that need both; with
    `flag`, preceded by it, and nothing at all when no run has the stage."""

    def labelled(wildcards):
        pairs = " ".join(
            f"{name}={path}" for name, path in get_evaluations(filename, stage)(wildcards).items()
        )
        return f"{flag} {pairs}" if flag and pairs else pairs

    return labelled


def get_labelled_inputs(wildcards, input):
    """`label=path` pairs of a rule's named inputs, for entry points that need both."""
    return " ".join(f"{name}={path}" for name, path in input.items())


def get_compare_settings(wildcards):
    """The compare section (baseline, excluded tags, paired bootstrap) and every run's tags, as JSON."""
    tags = {name: run["tags"] for name, run in CONFIG.runs.items()}
    return json.dumps({**CONFIG.compare, "tags": tags}, sort_keys=True)


def get_code(stage):
    """Params function: the fingerprint of the code `stage` runs, for the rules without a content
    key (leaderboard, comparison notebook, run views), so that a code change reruns them."""
    return lambda wildcards: PLAN.code[stage]


# Each leaderboard compares its runs with the baseline, or with the first run of its task when the
# baseline is a run of the other task.
BASELINES = {stage: PLAN.baseline_of(stage) for stage in ("evaluate", "evaluate_scores")}


def get_all_targets(wildcards):
    """The leaderboard, the compare notebook and every run's view."""
    return ["results/compare/leaderboard.csv", "results/compare/compare.html"] + [
        f"results/runs/{name}/index.json" for name in PLAN.runs
    ]
