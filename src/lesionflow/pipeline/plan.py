"""The plan: every run's content key per stage, and what each keyed job receives.

A key is the digest of a stage's settings (as the registry selects them), the keys of the
artifacts it reads and the fingerprint of the code it executes; never of a run's name.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lesionflow.io.prediction_folder import folder_fingerprint
from lesionflow.pipeline.artifacts import write_json
from lesionflow.pipeline.config import ResolvedConfig
from lesionflow.pipeline.errors import LesionflowError
from lesionflow.pipeline.file_hashes import FileHashCache, manifest_fingerprint
from lesionflow.pipeline.fingerprints import CodeBase
from lesionflow.pipeline.keys import digest
from lesionflow.pipeline.provenance import package_versions
from lesionflow.pipeline.stages import KEYED_STAGES, STAGES, run_stages

# With reproducibility.versions_in_keys, these libraries' versions enter these stages' keys.
VERSIONED_PACKAGES = ("torch", "monai", "numpy")
VERSIONED_STAGES = ("train", "infer", "infer_scores")
# The data settings that say which column holds the score and what to do with a bad one.
SCORE_SETTINGS = ("score_column", "score_range", "invalid_scores")


@dataclass(frozen=True)
class Job:
    """One keyed artifact folder: what the stage receives, and the keys of its inputs."""

    stage: str
    key: str
    settings: dict[str, Any]
    inputs: dict[str, str]

    @property
    def folder(self) -> str:
        """The folder, relative to the working directory, holding this job's artifacts."""
        return f"results/{STAGES[self.stage].folder_stage}/{self.key}"


@dataclass
class Plan:
    """Every job of every run, each run's key per stage, and every stage's code fingerprint."""

    runs: dict[str, dict[str, str]] = field(default_factory=dict)
    jobs: dict[str, dict[str, Job]] = field(default_factory=lambda: {s: {} for s in KEYED_STAGES})
    baseline: str = ""
    dataset_fingerprint: str = ""
    # The key of the nnU-Net export (results/nnunet_export/<key>/), or '' when not asked for.
    nnunet_export: str = ""
    code: dict[str, str] = field(default_factory=dict)
    # The library versions in the keys of training and inference, or None (the default: in none).
    versions: dict[str, str | None] | None = None

    def job(self, stage: str, key: str) -> Job:
        """The job of ``stage`` with content key ``key``."""
        try:
            return self.jobs[stage][key]
        except KeyError:
            raise LesionflowError(f"no {stage} artifact with key {key} in this config") from None

    def upstream(self, stage: str, key: str, wanted: str) -> str:
        """The key of the ``wanted`` stage that the job ``stage``/``key`` reads."""
        return self.job(stage, key).inputs[wanted]

    def run_folders(self, name: str) -> dict[str, str]:
        """Folder of each stage's artifacts for the run ``name``."""
        return {stage: f"results/{stage}/{key}" for stage, key in self.runs[name].items()}

    def runs_with(self, stage: str, key: str) -> list[str]:
        """Names of the runs whose ``stage`` job has this key, in config order."""
        return [name for name, keys in self.runs.items() if keys.get(stage) == key]

    def baseline_of(self, stage: str) -> str | None:
        """The run that the runs having ``stage`` are compared with: the baseline if it has the
        stage, else the first run that has it; None when no run has it."""
        runs = self.runs_of(stage)
        return self.baseline if self.baseline in runs else next(iter(runs), None)

    def maps_without_model(self, infer_key: str) -> bool:
        """Whether the maps under this infer key were imported (an external run) or averaged (an
        ensemble) rather than predicted by a model this plan trains."""
        return infer_key in self.jobs["import_predictions"] or infer_key in self.jobs["ensemble"]

    def runs_of(self, stage: str) -> list[str]:
        """Names of the runs that have a ``stage`` job (their task has the stage), in config order."""
        return [name for name, keys in self.runs.items() if stage in keys]


def run_settings(stage: str, run: dict[str, Any]) -> dict[str, Any]:
    """What the job of ``stage`` receives from a resolved run: the sections the registry names."""
    return {
        section: _section(run[section], keys) for section, keys in STAGES[stage].sections.items()
    }


def _section(values: Any, keys: tuple[str, ...] | None) -> Any:
    if not isinstance(values, dict):
        return values  # a scalar run key, such as task
    return dict(values) if keys is None else {k: values[k] for k in keys}


def _key_settings(stage: str, settings: dict[str, Any]) -> dict[str, Any]:
    drop = STAGES[stage].not_in_key
    return {
        section: {k: v for k, v in values.items() if k not in drop} if isinstance(values, dict) else values
        for section, values in settings.items()
    }


def _data_settings(config: ResolvedConfig, workdir: Path) -> tuple[dict, dict]:
    data = config.data
    scores = {key: data[key] for key in SCORE_SETTINGS}
    # Several lesion classes enter the key only when asked for, so a binary dataset keeps its key.
    if data["labels"] is not None:
        scores["labels"] = data["labels"]
    if data["source"] == "synthetic":
        synthetic = {k: v for k, v in data["synthetic"].items() if k != "haemorrhages" or v}
        settings = {"source": "synthetic", "synthetic": synthetic, **scores}
        return settings, settings
    manifest = (workdir / data["manifest"]).resolve()
    cache = FileHashCache(workdir / ".lesionflow" / "file-hashes.json")
    fingerprint = manifest_fingerprint(manifest, cache)
    masks = {"mask_channel": data["mask_channel"], "mask_threshold": data["mask_threshold"], **scores}
    return {"source": "manifest", "manifest": configured_path(data["manifest"]), **masks}, {
        "source": "manifest",
        "fingerprint": fingerprint,
        **masks,
    }


def configured_path(path: str) -> str:
    """A path as the config gives it (relative to the working directory, where every job runs), not
    resolved: a project folder moved or copied with its results then passes its jobs the same
    settings, and Snakemake, which reruns a job whose parameters changed, finds nothing to rerun."""
    return os.path.normpath(path)


def _split_settings(config: ResolvedConfig, workdir: Path) -> tuple[dict, dict]:
    """The split section as the job gets it (the splits file as configured) and as its key sees it.

    An nnU-Net splits file enters the key by its content, so editing it reruns the split and
    everything after it, while moving it reruns nothing.
    """
    split = dict(config.split)
    if split["nnunet_splits"] is None:
        return split, split
    path = (workdir / split["nnunet_splits"]).resolve()
    if not path.is_file():
        raise LesionflowError(f"split.nnunet_splits: file {path} does not exist")
    cache = FileHashCache(workdir / ".lesionflow" / "file-hashes.json")
    content = cache.content_hash(path)
    cache.save()
    return {**split, "nnunet_splits": configured_path(split["nnunet_splits"])}, {
        **split,
        "nnunet_splits": content,
    }


def _external(run: dict[str, Any], workdir: Path, cache: FileHashCache) -> tuple[dict, dict]:
    """The external section as the import job gets it (the folder as configured) and as its key sees it
    (the folder's content, never its path)."""
    external = run["external"]
    folder = (workdir / external["predictions"]).resolve()
    fingerprint = folder_fingerprint(folder, cache)
    return (
        {"external": {**external, "predictions": configured_path(external["predictions"])}},
        {"external": {**external, "predictions": fingerprint}},
    )


def _members(run: dict[str, Any], plan: Plan) -> tuple[dict, dict]:
    """The ensemble section as its job gets it and its key sees it: the members' infer keys (the
    mean does not depend on their order, so neither does the key)."""
    members = sorted({plan.runs[member]["infer"] for member in run["ensemble"]["members"]})
    return {"ensemble": {"members": members}}, {"ensemble": {"members": members}}


def _members_preprocess(name: str, run: dict[str, Any], plan: Plan) -> str:
    """The preprocess key all of an ensemble's members share (its tiles are theirs, averaged)."""
    keys = {member: plan.runs[member]["preprocess"] for member in run["ensemble"]["members"]}
    if len(set(keys.values())) > 1:
        raise LesionflowError(
            f"config key 'runs.{name}.ensemble.members': the runs {', '.join(keys)} do not share their "
            "preprocessing (preprocess settings), so their maps cannot be averaged item by item"
        )
    return next(iter(keys.values()))


def library_versions(config: ResolvedConfig) -> dict[str, str | None] | None:
    """The library versions that enter the keys of training and inference
    (reproducibility.versions_in_keys), or None when they stay out of every key."""
    if not config.reproducibility.get("versions_in_keys"):
        return None
    versions = package_versions()
    return {name: versions[name] for name in VERSIONED_PACKAGES}


def check_pseudonymise(config: ResolvedConfig) -> None:
    """Refuse runs that differ in analyse.pseudonymise: the views of every run go into one report,
    where a run shown with its patients' ids would undo the others' pseudonyms."""
    values = {name: run["analyse"]["pseudonymise"] for name, run in config.runs.items()}
    first = next(iter(values))
    for name, value in values.items():
        if value != values[first]:
            raise LesionflowError(
                f"config key 'runs.{name}.analyse.pseudonymise' is {str(value).lower()} but run '{first}' "
                f"has {str(values[first]).lower()}: the reports of every run are pseudonymised or none "
                "(set it once, under defaults)"
            )


def build_plan(config: ResolvedConfig, workdir: str | Path, code: CodeBase) -> Plan:
    """Compute every artifact's key for every run of ``config``, with the code in ``code``."""
    workdir = Path(workdir)
    check_pseudonymise(config)
    plan = Plan(baseline=config.baseline, code=code.fingerprints(), versions=library_versions(config))
    data_settings, data_key_params = _data_settings(config, workdir)
    # What identifies the dataset in reports: its generator settings or its files' content.
    plan.dataset_fingerprint = digest(data_key_params, length=16)
    shared = {"data": (data_settings, data_key_params), "split": _split_settings(config, workdir)}
    cache = FileHashCache(workdir / ".lesionflow" / "file-hashes.json")
    # Ensembles last: their keys come from their members'.
    for name, run in sorted(config.runs.items(), key=lambda item: item[1]["source"] == "ensemble"):
        keys: dict[str, str] = {}
        for stage in run_stages(run["task"], run["source"], "fold" in run):
            if stage == "infer" and run["source"] != "model":
                # Its own job, under the infer stage's name: later stages read it as they read infer.
                if run["source"] == "external":
                    keys[stage] = _add_job(plan, "import_predictions", *_external(run, workdir, cache), keys)
                else:
                    keys[stage] = _add_job(plan, "ensemble", *_members(run, plan), keys)
                continue
            if stage == "preprocess" and run["source"] == "ensemble":
                keys[stage] = _members_preprocess(name, run, plan)
                continue
            if stage == "fold":
                fold = {"fold": run["fold"], "score_bins": config.split["score_bins"]}
                keys[stage] = _add_job(plan, stage, fold, fold, keys)
                continue
            if stage in shared:
                settings, key_params = shared[stage]
            else:
                settings = run_settings(stage, run)
                key_params = _key_settings(stage, settings)
            keys[stage] = _add_job(plan, stage, settings, key_params, keys)
        plan.runs[name] = keys
    plan.runs = {name: plan.runs[name] for name in config.runs}
    if config.nnunet_export is not None:
        # Every run reads the same data and split: any run's keys give the export's inputs.
        export = {"nnunet_export": config.nnunet_export}
        plan.nnunet_export = _add_job(plan, "nnunet_export", export, export, next(iter(plan.runs.values())))
    return plan


def _add_job(plan: Plan, stage: str, settings: dict, key_params: dict, keys: dict[str, str]) -> str:
    """Key and register the job of ``stage`` that receives ``settings`` (``key_params`` as its key
    sees them) and reads the artifacts of ``keys`` (a run's key per stage); return its key."""
    # An external run has no train stage: its analysis reads what it has.
    inputs = {upstream: keys[upstream] for upstream in STAGES[stage].reads if upstream in keys}
    keyed = {"stage": stage, "params": key_params, "inputs": inputs, "code": plan.code[stage]}
    if plan.versions is not None and stage in VERSIONED_STAGES:
        # Only when asked for: by default an upgrade keeps every key (verify flags the results).
        keyed["versions"] = plan.versions
    key = digest(keyed)
    plan.jobs[stage].setdefault(key, Job(stage, key, settings, inputs))
    return key


def settings_json(plan: Plan, stage: str, key: str) -> str:
    """The settings a stage's job receives, as compact JSON for its command line."""
    return json.dumps(plan.job(stage, key).settings, sort_keys=True, separators=(",", ":"))


# The environment variable through which cluster jobs find the plan their Snakemake made.
PLAN_ENV = "LESIONFLOW_PLAN"


def _config_digest(config: ResolvedConfig) -> str:
    return digest(
        {
            "data": config.data,
            "split": config.split,
            "runs": config.runs,
            "compare": config.compare,
            "nnunet_export": config.nnunet_export,
            "reproducibility": config.reproducibility,
        },
        length=32,
    )


def plan_record(plan: Plan, config: ResolvedConfig) -> dict[str, Any]:
    """The plan as JSON-ready data, with a digest of the config it was made from."""
    return {
        "config_digest": _config_digest(config),
        "baseline": plan.baseline,
        "dataset_fingerprint": plan.dataset_fingerprint,
        "nnunet_export": plan.nnunet_export,
        "code": plan.code,
        "versions": plan.versions,
        "runs": plan.runs,
        "jobs": {
            stage: {key: {"settings": job.settings, "inputs": job.inputs} for key, job in jobs.items()}
            for stage, jobs in plan.jobs.items()
        },
    }


def plan_from_record(record: dict[str, Any]) -> Plan:
    """The :class:`Plan` that :func:`plan_record` wrote."""
    plan = Plan(
        runs=record["runs"],
        baseline=record["baseline"],
        dataset_fingerprint=record["dataset_fingerprint"],
        nnunet_export=record["nnunet_export"],
        code=record["code"],
        versions=record.get("versions"),
    )
    for stage, jobs in record["jobs"].items():
        plan.jobs[stage] = {
            key: Job(stage, key, job["settings"], job["inputs"]) for key, job in jobs.items()
        }
    return plan


def shared_plan(
    config: ResolvedConfig, workdir: str | Path, environ: dict[str, str], code: CodeBase
) -> Plan:
    """The plan of this Snakemake run: the one its main process wrote, or a new one.

    A cluster job parses the Snakefile again; recomputing the keys there would pick up any code
    edited since the run started and ask for artifacts that the run never planned. So the main
    process writes its plan to ``.lesionflow/plans/`` and names it in ``environ[PLAN_ENV]``, and
    a job reuses it when it was made from the same config.
    """
    path = environ.get(PLAN_ENV)
    if path and Path(path).is_file():
        record = json.loads(Path(path).read_text())
        if record.get("config_digest") == _config_digest(config) and "code" in record:
            return plan_from_record(record)
    plan = build_plan(config, workdir, code)
    record = plan_record(plan, config)
    target = Path(workdir) / ".lesionflow" / "plans" / f"{digest(record, length=16)}.json"
    if not target.is_file():
        write_json(target, record)
    environ[PLAN_ENV] = str(target.resolve())
    return plan
