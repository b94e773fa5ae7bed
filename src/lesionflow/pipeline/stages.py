"""The stage registry: the one table of what each stage reads, receives, runs and shows.

Keys, the rules' notebook and figure lists and the docs' stage table all derive from STAGES;
nothing else may list the stages again.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

# How a stage's artifacts are keyed: once per dataset (data, split), per run setting (most
# stages, results/<stage>/<key>/), or across runs (the leaderboard and views, which rerun when
# their code or inputs change).
Scope = Literal["dataset", "run", "across_runs"]


@dataclass(frozen=True)
class Stage:
    """One stage of the chain, as the plan, the rules and the docs see it."""

    name: str
    summary: str
    script: str
    scope: Scope = "run"
    reads: tuple[str, ...] = ()
    # Run sections the job receives: the whole section (None) or only the listed keys, so that
    # a setting a stage never reads cannot change its key.
    sections: Mapping[str, tuple[str, ...] | None] = field(default_factory=dict)
    # Settings that change how a job runs but not what it writes.
    not_in_key: tuple[str, ...] = ()
    notebook: str | None = None
    figures: tuple[str, ...] = ()

    @property
    def script_path(self) -> str:
        """The entry point, relative to the workflow's folder."""
        return f"scripts/{self.script}.py"

    @property
    def notebook_path(self) -> str | None:
        """The parameterised notebook, relative to the workflow's folder, if any."""
        return f"notebooks/{self.notebook}.ipynb" if self.notebook else None


_REGISTRY = (
    Stage(
        "data",
        "generate the built-in dataset, or check a user manifest row by row; image and lesion tables",
        script="data",
        scope="dataset",
    ),
    Stage(
        "split",
        "train / val / test split grouped by subject, stratified by lesion presence",
        script="split",
        scope="dataset",
        reads=("data",),
    ),
    Stage(
        "preprocess",
        "field-of-view crop, resize, normalisation and tiles; each item keeps its image's subset",
        script="preprocess",
        reads=("data", "split"),
        sections={"preprocess": None},
    ),
    Stage(
        "train",
        "train a MONAI network on the training items; best epoch chosen on validation",
        script="train",
        reads=("preprocess",),
        sections={"model": None, "train": None},
        not_in_key=("device", "num_workers"),
    ),
    Stage(
        "infer",
        "probability maps of val and test images with test-time augmentation, stitched window by window",
        script="infer",
        reads=("preprocess", "train"),
        sections={"infer": None},
        not_in_key=("device", "batch_size"),
    ),
    Stage(
        "tune",
        "threshold and minimum lesion area chosen on validation maps only, then locked",
        script="tune",
        reads=("data", "split", "infer"),
        sections={"tune": None},
    ),
    Stage(
        "evaluate",
        "per-image, lesion-wise and presence metrics with subject-bootstrap intervals",
        script="evaluate",
        reads=("data", "split", "preprocess", "infer", "tune"),
        sections={"evaluate": None},
    ),
    Stage(
        "export",
        "locked masks and probability maps of val and test in each source's format and geometry",
        script="export",
        reads=("data", "infer", "tune"),
    ),
    Stage(
        "breakdown",
        "zero-Dice breakdown of the test images: why each scored zero",
        script="breakdown",
        reads=("evaluate",),
    ),
    Stage(
        "analyse",
        "the run's analysis notebook: data, split, training, metrics, errors and examples",
        script="notebook",
        reads=("data", "split", "preprocess", "train", "infer", "tune", "evaluate", "breakdown"),
        sections={"analyse": ("dice_bands", "n_examples")},
        notebook="analysis",
        figures=(
            "split",
            "data_report",
            "epoch_curves",
            "image_groups",
            "dice_per_image_test",
            "dice_per_image_val",
            "zero_dice",
            "detection_by_size",
            "examples_best",
            "examples_worst",
            "examples_false_positive",
        ),
    ),
    Stage(
        "training_report",
        "the training report notebook: curves, learning rate and verdicts from the train stage alone",
        script="notebook",
        reads=("train",),
        sections={"analyse": ("dice_bands", "verdict_rules")},
        notebook="training_report",
        figures=("loss_curves", "metric_curves", "lr_schedule"),
    ),
    Stage(
        "compare",
        "the leaderboard: every run's test metrics, ranks and paired differences to the baseline",
        script="compare",
        scope="across_runs",
        reads=("evaluate",),
    ),
    Stage(
        "compare_report",
        "the comparison notebook: rankings, forest plot and paired differences",
        script="notebook",
        scope="across_runs",
        reads=("compare",),
        notebook="compare",
        figures=("forest", "paired_deltas"),
    ),
    Stage(
        "run_view",
        "results/runs/<name>/: a copy of one run's notebooks, tables and figures, by its name",
        script="run_view",
        scope="across_runs",
        reads=(
            "split", "train", "tune", "evaluate", "export", "breakdown", "analyse", "training_report",
        ),
    ),
)

STAGES: dict[str, Stage] = {stage.name: stage for stage in _REGISTRY}
# Stages whose artifacts live under a content key, in pipeline order.
KEYED_STAGES: tuple[str, ...] = tuple(s.name for s in _REGISTRY if s.scope != "across_runs")
NOTEBOOK_STAGES: tuple[str, ...] = tuple(s.name for s in _REGISTRY if s.notebook)


def downstream(stage: str) -> set[str]:
    """``stage`` and every stage that reads its artifacts, directly or not."""
    found = {stage}
    # One pass suffices: the registry is in pipeline order, each stage after all it reads.
    for other in STAGES.values():
        if found & set(other.reads):
            found.add(other.name)
    return found


def figures(stage: str) -> list[str]:
    """Names of the figures a notebook stage saves as figures/<name>.png and .svg."""
    return list(STAGES[stage].figures)


def stage_table() -> str:
    """The docs' stage table (Markdown), one row per stage in pipeline order."""
    rows = ["| stage | what it does | reads | entry point |", "| --- | --- | --- | --- |"]
    for stage in _REGISTRY:
        reads = ", ".join(stage.reads) or "(config only)"
        entry = f"`{stage.script_path}`"
        if stage.notebook_path:
            entry += f" + `{stage.notebook_path}`"
        rows.append(f"| {stage.name} | {stage.summary} | {reads} | {entry} |")
    return "\n".join(rows)
