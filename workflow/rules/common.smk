# Input functions and the run-name -> key mapping. Keys themselves come from lesionflow.keys.

import json
import os

from lesionflow.keys import settings_json

envvars:
    "PATH",


REPO = Path(workflow.basedir)
NOTEBOOK = str(REPO / "notebooks" / "analysis.ipynb")
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


def get_run_resource(stage, what):
    """The `resources` entry of the first run whose `stage` job has this key."""

    def resource(wildcards):
        name = next(n for n, keys in PLAN.runs.items() if keys[stage] == wildcards.key)
        return CONFIG.runs[name]["resources"][what]

    return resource


def get_notebook_parameters(wildcards, input):
    """Papermill parameters of one analysis notebook: its input files and display settings."""
    job = PLAN.job("analyse", wildcards.key)
    files = {name: os.path.abspath(path) for name, path in input.items() if name != "notebook"}
    return json.dumps({"title": f"Analysis {wildcards.key}", **files, **job.settings["analyse"]})


def get_run_artifacts(wildcards):
    """Every artifact a run's view links to, by label (building them builds the run's branch)."""
    folders = PLAN.run_folders(wildcards.name)
    return {
        "split_summary": f"{folders['split']}/split_summary.csv",
        "split_figure": f"{folders['split']}/split_summary.png",
        "training_curves": f"{folders['train']}/training_curves.png",
        "metrics_by_epoch": f"{folders['train']}/metrics_by_epoch.csv",
        "train_summary": f"{folders['train']}/train_summary.json",
        "model": f"{folders['train']}/model.pt",
        "locked": f"{folders['tune']}/locked.json",
        "per_image_test": f"{folders['evaluate']}/per_image_test.csv",
        "lesions_test": f"{folders['evaluate']}/lesions_test.csv",
        "summary": f"{folders['evaluate']}/summary.json",
        "zero_dice_summary": f"{folders['breakdown']}/zero_dice_summary.csv",
        "zero_dice": f"{folders['breakdown']}/zero_dice.json",
        "analysis": f"{folders['analyse']}/analysis.html",
    }


def get_run_record(wildcards):
    """The run's resolved settings and keys, as JSON for its index."""
    return json.dumps(
        {
            "run": wildcards.name,
            "keys": PLAN.runs[wildcards.name],
            "settings": CONFIG.runs[wildcards.name],
            "data": CONFIG.data,
            "split": CONFIG.split,
        },
        sort_keys=True,
    )


def get_evaluations(filename):
    """`filename` of every run's evaluate job, by run name, in config order."""
    return lambda wildcards: {
        name: f"results/evaluate/{keys['evaluate']}/{filename}" for name, keys in PLAN.runs.items()
    }


def get_evaluation_files(filename):
    """Every run's evaluate `filename`, as a list (an input that must exist, one per run)."""
    return lambda wildcards: list(get_evaluations(filename)(wildcards).values())


def get_labelled(filename):
    """`run=path` pairs of every run's evaluate `filename`, for entry points that need both."""
    return lambda wildcards: " ".join(
        f"{name}={path}" for name, path in get_evaluations(filename)(wildcards).items()
    )


def get_labelled_inputs(wildcards, input):
    """`label=path` pairs of a rule's named inputs, for entry points that need both."""
    return " ".join(f"{name}={path}" for name, path in input.items())


def get_compare_settings(wildcards):
    """The compare section (baseline and paired bootstrap), as JSON."""
    return json.dumps(CONFIG.compare, sort_keys=True)


def get_all_targets(wildcards):
    """The leaderboard and every run's view."""
    return ["results/compare/leaderboard.csv"] + [
        f"results/runs/{name}/index.json" for name in PLAN.runs
    ]
