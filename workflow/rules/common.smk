# Input functions and the run-name -> key mapping. Keys themselves come from lesionflow.pipeline.plan.

import json
import os
import re
import shutil

from lesionflow.evaluation.artifact_names import FILE_NAMES as EVALUATION_FILES
from lesionflow.pipeline.failures import PARTIAL_FOLDER, run_failures
from lesionflow.pipeline.plan import settings_json
from lesionflow.reports.run_settings_table import differing_settings
from lesionflow.pipeline.stages import KEYED_STAGES, STAGES, figures

envvars:
    "PATH",
    "LESIONFLOW_PLAN",


REPO = Path(workflow.basedir)
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


# What the fold stage writes in place of the split and preprocess stages' subset tables.
FOLD_FILES = {
    ("split", "split.csv"): "split.csv",
    ("split", "split_summary.csv"): "split_summary.csv",
    ("preprocess", "split.csv"): "items_split.csv",
    ("preprocess", "images.csv"): "images.csv",
}


def get_subsets(stage, upstream, filename):
    """As get_input for a table of subsets, but the fold stage's for a job of a k-fold run: each
    fold's runs train, tune and are tested on their own fold's subsets."""

    def artifact(wildcards):
        inputs = PLAN.job(stage, wildcards.key).inputs
        if "fold" in inputs:
            return f"results/fold/{inputs['fold']}/{FOLD_FILES[(upstream, filename)]}"
        return f"results/{upstream}/{inputs[upstream]}/{filename}"

    return artifact


def get_optional_input(stage, upstream, filename):
    """As get_input, but nothing (an empty list) for a job without that upstream stage: an
    external run has no training."""

    def artifact(wildcards):
        key = PLAN.job(stage, wildcards.key).inputs.get(upstream)
        return f"results/{upstream}/{key}/{filename}" if key else []

    return artifact


def get_import_record(stage, filename):
    """The record `filename` of an external run's import or an ensemble's mean, read by its `stage`
    job; nothing (an empty list) for a model run."""

    def record(wildcards):
        key = PLAN.job(stage, wildcards.key).inputs["infer"]
        return f"results/infer/{key}/{filename}" if PLAN.maps_without_model(key) else []

    return record


def get_ensemble_folders(wildcards):
    """The infer folders of an ensemble job's members."""
    members = PLAN.job("ensemble", wildcards.key).settings["ensemble"]["members"]
    return [f"results/infer/{key}" for key in members]


def get_ensemble_members(filenames):
    """Input function: the files `filenames` (with {subset}) of every member of an ensemble job."""

    def files(wildcards):
        return [
            f"{folder}/{name.format(subset=wildcards.subset)}"
            for folder in get_ensemble_folders(wildcards)
            for name in filenames
        ]

    return files


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
        # An optional input that is absent (an empty list) reaches the notebook as None.
        # Paths relative to the working directory, where the notebook runs: absolute ones would
        # change, and rerun every notebook, when the project folder moves.
        files = {name: path or None for name, path in input.items()}
        figures_dir = os.path.join(os.path.dirname(output.html), "figures")
        if stage == "compare_report":
            return json.dumps({"title": title, **files, "figures_dir": figures_dir, "baseline": PLAN.baseline})
        job_settings = PLAN.job(stage, wildcards.key).settings
        # The analysis notebook of an external run also learns where its predictions came from.
        source = {"source": job_settings["source"]} if "source" in job_settings else {}
        settings = {**job_settings["analyse"], **source}
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
        "split_summary": f"{folders.get('fold', folders['split'])}/split_summary.csv",
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


# What a segmentation run's view links to: label -> (stage, file in the stage's folder).
RUN_ARTIFACTS = {
    "split_summary": ("split", "split_summary.csv"),
    "metrics_by_epoch": ("train", "metrics_by_epoch.csv"),
    "train_summary": ("train", "train_summary.json"),
    "locked": ("tune", "locked.json"),
    "per_image_test": ("evaluate", "per_image_test.csv"),
    "lesions_test": ("evaluate", "lesions_test.csv"),
    "summary": ("evaluate", "summary.json"),
    "export": ("export", "export.json"),
    "zero_dice_summary": ("breakdown", "zero_dice_summary.csv"),
    "zero_dice": ("breakdown", "zero_dice.json"),
    "analysis": ("analyse", "analysis.html"),
    "analysis_notebook": ("analyse", "analysis.ipynb"),
    "training_report": ("training_report", "training_report.html"),
    "training_report_notebook": ("training_report", "training_report.ipynb"),
}


def get_run_artifacts(wildcards):
    """Every artifact a segmentation run's view links to, by label (building them builds the run's
    branch); an external run has no training artifacts."""
    folders = PLAN.run_folders(wildcards.name)
    # A fold's run shows its fold's split.
    folders = {**folders, "split": folders.get("fold", folders["split"])}
    return {
        **{
            label: f"{folders[stage]}/{filename}"
            for label, (stage, filename) in RUN_ARTIFACTS.items()
            if stage in folders
        },
        **_figure_artifacts(folders, [s for s in ("analyse", "training_report") if s in folders]),
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


def get_import_records(wildcards=None):
    """Each external run's import record and each ensemble's (results/infer/<key>/test_infer.json),
    by run name."""
    return {
        name: f"results/infer/{keys['infer']}/test_infer.json"
        for name, keys in PLAN.runs.items()
        if "infer" in keys and PLAN.maps_without_model(keys["infer"])
    }


def get_fold_evaluations(filename):
    """`filename` of the evaluate stage of every segmentation run of a k-fold split, by run name."""
    return lambda wildcards: {
        name: f"results/evaluate/{PLAN.runs[name]['evaluate']}/{filename}"
        for name in PLAN.runs_of("evaluate")
        if "fold" in PLAN.runs[name]
    }


def get_fold_files(filename):
    """The k-fold runs' evaluate `filename`, as a list of inputs."""
    return lambda wildcards: list(get_fold_evaluations(filename)(wildcards).values())


def get_labelled_folds(filename, flag):
    """`flag run=path` pairs of the k-fold runs' evaluate `filename`, or nothing without folds."""

    def labelled(wildcards):
        paths = get_fold_evaluations(filename)(wildcards)
        pairs = " ".join(f"{name}={path}" for name, path in paths.items())
        return f"{flag} {pairs}" if pairs else ""

    return labelled


def get_import_files(wildcards):
    """The external runs' import records, as a list of inputs."""
    return list(get_import_records().values())


def get_labelled_imports(wildcards):
    """`--import-record run=path` pairs of the external runs, or nothing when there are none."""
    pairs = " ".join(f"{name}={path}" for name, path in get_import_records().items())
    return f"--import-record {pairs}" if pairs else ""


def get_labelled_inputs(wildcards, input):
    """`label=path` pairs of a rule's named inputs, for entry points that need both."""
    return " ".join(f"{name}={path}" for name, path in input.items())


def get_compare_settings(wildcards=None):
    """The compare section (baseline, excluded tags, paired bootstrap), every run's tags, group
    (the recipe its seeds came from), seed (for the runs of a recipe with seeds) and the settings
    that differ between runs, as JSON."""
    tags = {name: run["tags"] for name, run in CONFIG.runs.items()}
    seeds = {
        name: run["train"]["seed"] if CONFIG.groups[name] != name else None
        for name, run in CONFIG.runs.items()
    }
    return json.dumps(
        {
            **CONFIG.compare,
            "tags": tags,
            "groups": CONFIG.groups,
            "seeds": seeds,
            # Only what differs: the whole configs of 50 runs would not fit on a command line.
            "settings": differing_settings(CONFIG.runs),
        },
        sort_keys=True,
    )


def remove_obsolete_partial_leaderboard():
    """Remove results/compare/partial/ once a leaderboard newer than it has been written."""
    partial, finished = Path(PARTIAL_FOLDER), Path("results/compare/leaderboard.csv")
    if partial.is_dir() and finished.is_file() and finished.stat().st_mtime > partial.stat().st_mtime:
        shutil.rmtree(partial)


def write_partial_leaderboard():
    """After failed jobs: rank the runs that finished, list the others with the stage that failed
    and its log (results/compare/partial/), and say so. Nothing when every run has test results."""
    # Imported here: the statistics and plotting it pulls in would slow every parse of the workflow.
    from lesionflow.evaluation.partial_leaderboard import write_partial_leaderboards
    from lesionflow.evaluation.run_groups import read_import_records

    outputs = {stage: [str(path) for path in getattr(rules, stage).output] for stage in KEYED_STAGES}
    logs = {stage: [str(path) for path in getattr(rules, stage).log] for stage in KEYED_STAGES}
    failures = run_failures(PLAN, outputs, logs, Path.cwd())
    if not failures:
        return
    records = {name: path for name, path in get_import_records().items() if Path(path).is_file()}
    settings = {**json.loads(get_compare_settings()), "imports": read_import_records(records)}
    folder = write_partial_leaderboards(PLAN, settings, RANKED_FILES, failures, Path.cwd())
    for name, failure in failures.items():
        print(f"lesionflow: run {name}: {failure['reason']}", file=sys.stderr)
    print(f"lesionflow: the other runs are ranked in {folder}/leaderboard.csv", file=sys.stderr)


def get_code(stage):
    """Params function: the fingerprint of the code `stage` runs, for the rules without a content
    key (leaderboard, comparison notebook, run views), so that a code change reruns them."""
    return lambda wildcards: PLAN.code[stage]


# Each leaderboard compares its runs with the baseline, or with the first run of its task when the
# baseline is a run of the other task.
BASELINES = {stage: PLAN.baseline_of(stage) for stage in ("evaluate", "evaluate_scores")}


def get_all_targets(wildcards):
    """The leaderboard, the compare notebook, every run's view and, when the config asks for it,
    the nnU-Net export."""
    export = [f"results/nnunet_export/{PLAN.nnunet_export}"] if PLAN.nnunet_export else []
    return ["results/compare/leaderboard.csv", "results/compare/compare.html", *export] + [
        f"results/runs/{name}/index.json" for name in PLAN.runs
    ]
