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
# What a run predicts (its `task`): a lesion mask per image, or a score per image.
TASKS = ("segmentation", "regression")
SEGMENTATION, REGRESSION = TASKS
# The subsets a model predicts: validation (for tuning) and test (read once, locked).
SUBSETS = ("val", "test")


@dataclass(frozen=True)
class Stage:
    """One stage of the chain, as the plan, the rules and the docs see it."""

    name: str
    summary: str
    script: str
    scope: Scope = "run"
    reads: tuple[str, ...] = ()
    # Run sections the job receives: the whole section (None) or only the listed keys, so that
    # a setting a stage never reads cannot change its key. A scalar run key (task) is passed as is.
    sections: Mapping[str, tuple[str, ...] | None] = field(default_factory=dict)
    # The tasks whose runs have this stage (data to training serve both).
    tasks: tuple[str, ...] = TASKS
    # Settings that change how a job runs but not what it writes.
    not_in_key: tuple[str, ...] = ()
    notebook: str | None = None
    figures: tuple[str, ...] = ()
    # The stage whose folder (results/<stage>/<key>/) it writes into, when not its own: imported
    # and averaged maps stand where a model's maps would.
    writes_as: str | None = None
    # The jobs one key has, when one per subset: each writes its own files and provenance record.
    parts: tuple[str, ...] = ()

    @property
    def folder_stage(self) -> str:
        """The stage name in the path of this stage's artifacts."""
        return self.writes_as or self.name

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
        "train / val / test split grouped by subject, stratified by lesion presence or by score bins",
        script="split",
        scope="dataset",
        reads=("data",),
    ),
    Stage(
        "nnunet_export",
        "the dataset and split as an nnU-Net v2 raw dataset (nnunet_export in the config)",
        script="nnunet_export",
        scope="dataset",
        reads=("data", "split"),
        # No run has it: the config's nnunet_export section asks for it once.
        tasks=(),
    ),
    Stage(
        "preprocess",
        "field-of-view crop, resize, normalisation and tiles; each item keeps its image's subset",
        script="preprocess",
        reads=("data", "split"),
        sections={"preprocess": None},
    ),
    Stage(
        "fold",
        "a k-fold run's subsets (split.folds): its fold is val, the other folds train, test held out",
        script="fold",
        reads=("split", "preprocess"),
        # Placed by the plan in the runs of a k-fold split; receives the run's fold.
        tasks=(),
    ),
    Stage(
        "train",
        "train a MONAI network on the training items; best epoch chosen on validation",
        script="train",
        reads=("preprocess", "fold"),
        sections={"task": None, "model": None, "train": None},
        not_in_key=("device", "num_workers"),
    ),
    Stage(
        "import_predictions",
        "an external run's predictions (nnU-Net's or any tool's folder) as the probability maps of infer",
        script="import_predictions",
        writes_as="infer",
        parts=SUBSETS,
        reads=("data", "split"),
        sections={"external": None},
        # Placed by the plan: it stands in for train and infer in a run with source external.
        tasks=(),
    ),
    Stage(
        "ensemble",
        "an ensemble run's probability maps: the mean of its members' maps, image by image",
        script="ensemble",
        writes_as="infer",
        parts=SUBSETS,
        # Its members' infer folders come from its settings (their keys), not from one upstream.
        sections={"ensemble": None},
        tasks=(),
    ),
    Stage(
        "infer",
        "probability maps of val and test images with test-time augmentation, stitched window by window",
        script="infer",
        parts=SUBSETS,
        tasks=(SEGMENTATION,),
        reads=("preprocess", "fold", "train"),
        sections={"infer": None},
        not_in_key=("device", "batch_size"),
    ),
    Stage(
        "tune",
        "threshold, minimum lesion area and presence fusion chosen on validation maps only, then locked",
        script="tune",
        tasks=(SEGMENTATION,),
        reads=("data", "split", "fold", "infer"),
        sections={
            "tune": (
                "objective", "thresholds", "min_lesion_areas", "presence_score", "connectivity", "fusion",
            )
        },
    ),
    Stage(
        "evaluate",
        "per-image, lesion-wise and presence metrics with subject-bootstrap intervals",
        script="evaluate",
        tasks=(SEGMENTATION,),
        reads=("data", "split", "preprocess", "fold", "infer", "tune"),
        sections={"evaluate": ("lesion_matching", "size_bins", "size_bins_mm3", "bootstrap")},
    ),
    Stage(
        "export",
        "locked masks and probability maps of val and test in each source's format and geometry",
        script="export",
        tasks=(SEGMENTATION,),
        reads=("data", "infer", "tune"),
    ),
    Stage(
        "breakdown",
        "zero-Dice breakdown of the test images: why each scored zero",
        script="breakdown",
        tasks=(SEGMENTATION,),
        reads=("evaluate",),
    ),
    Stage(
        "analyse",
        "the run's analysis notebook: data, split, training, metrics, errors and examples",
        script="notebook",
        tasks=(SEGMENTATION,),
        reads=("data", "split", "preprocess", "fold", "train", "infer", "tune", "evaluate", "breakdown"),
        # An external run (source) has no train stage: the notebook says where its maps came from.
        sections={"analyse": ("dice_bands", "n_examples", "pseudonymise"), "source": None},
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
        "infer_scores",
        "predicted scores of val and test images, averaged over mirror-flip test-time augmentation",
        script="infer_scores",
        parts=SUBSETS,
        tasks=(REGRESSION,),
        reads=("preprocess", "fold", "train"),
        sections={"infer": ("tta", "device", "batch_size")},
        not_in_key=("device", "batch_size"),
    ),
    Stage(
        "calibrate",
        "a linear calibration of the predicted scores fitted on validation only, then locked",
        script="calibrate",
        tasks=(REGRESSION,),
        reads=("data", "split", "fold", "infer_scores"),
        sections={"tune": ("calibration",)},
    ),
    Stage(
        "evaluate_scores",
        "sRMSE, MAE, R², Pearson and Spearman with subject-bootstrap intervals, by score range",
        script="evaluate_scores",
        tasks=(REGRESSION,),
        reads=("data", "split", "fold", "infer_scores", "calibrate"),
        sections={"evaluate": ("score_ranges", "bootstrap")},
    ),
    Stage(
        "analyse_scores",
        "the run's regression notebook: predicted against true, residuals by range, worst cases",
        script="notebook",
        tasks=(REGRESSION,),
        reads=("data", "split", "fold", "train", "calibrate", "evaluate_scores"),
        sections={"analyse": ("n_examples", "high_score", "pseudonymise")},
        notebook="regression",
        figures=(
            "score_scatter",
            "residuals_by_range",
            "bland_altman",
            "visit_consistency",
            "training_curves",
            "worst_cases",
        ),
    ),
    Stage(
        "training_report",
        "the training report notebook: curves, learning rate and verdicts from the train stage alone",
        script="notebook",
        reads=("train",),
        # It shows no image or subject id, so analyse.pseudonymise does not reach (or rekey) it.
        sections={"analyse": ("dice_bands", "verdict_rules")},
        notebook="training_report",
        figures=("loss_curves", "metric_curves", "lr_schedule"),
    ),
    Stage(
        "compare",
        "the leaderboard: every run's test metrics, ranks and paired differences to the baseline",
        script="compare",
        scope="across_runs",
        reads=("evaluate", "evaluate_scores"),
    ),
    Stage(
        "compare_report",
        "the comparison notebook: rankings, forest plot and paired differences",
        script="notebook",
        scope="across_runs",
        reads=("compare",),
        notebook="compare",
        figures=("forest", "paired_deltas", "forest_regression", "paired_deltas_regression"),
    ),
    Stage(
        "run_view",
        "results/runs/<name>/: a copy of one run's notebooks, tables and figures, by its name",
        script="run_view",
        scope="across_runs",
        reads=(
            "split", "train", "tune", "evaluate", "export", "breakdown", "analyse", "training_report",
        ),
        tasks=(SEGMENTATION,),
    ),
    Stage(
        "score_run_view",
        "results/runs/<name>/ of a regression run: its notebooks, per-case table and figures",
        script="run_view",
        scope="across_runs",
        tasks=(REGRESSION,),
        reads=("split", "train", "calibrate", "evaluate_scores", "analyse_scores", "training_report"),
    ),
)

STAGES: dict[str, Stage] = {stage.name: stage for stage in _REGISTRY}
# Stages whose artifacts live under a content key, in pipeline order.
KEYED_STAGES: tuple[str, ...] = tuple(s.name for s in _REGISTRY if s.scope != "across_runs")
NOTEBOOK_STAGES: tuple[str, ...] = tuple(s.name for s in _REGISTRY if s.notebook)


def task_stages(task: str) -> tuple[str, ...]:
    """The keyed stages of a run of ``task``, in pipeline order."""
    return tuple(name for name in KEYED_STAGES if task in STAGES[name].tasks)


def run_stages(task: str, source: str, folded: bool) -> tuple[str, ...]:
    """The keyed stages of a run of ``task`` whose predictions come from ``source`` (model, external
    or ensemble), in pipeline order; an external or ensemble run's maps take the infer stage's place,
    and a run of one fold of a k-fold split (``folded``) has the fold stage."""
    stages = task_stages(task)
    if source != "model":
        stages = tuple(name for name in stages if name not in EXTERNAL_SKIPS)
    if folded:
        stages = tuple(name for name in KEYED_STAGES if name in stages or name == "fold")
    return stages


# What a run with source external or ensemble does not have: it trains nothing.
EXTERNAL_SKIPS = ("train", "training_report")


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
