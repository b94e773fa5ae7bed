"""Content keys: every artifact's key is the hash of everything that decides it.

Keys are computed here and nowhere else. A key never depends on a run's name, an absolute
path, the time, the device or the number of workers.
"""

from __future__ import annotations

import ast
import csv
import hashlib
import importlib.util
import json
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from lesionflow.pipeline.artifacts import write_json
from lesionflow.pipeline.config import ResolvedConfig
from lesionflow.pipeline.errors import LesionflowError

KEY_LENGTH = 12
REPO_ROOT = Path(__file__).resolve().parents[3]

# The library module each stage runs; the modules it imports are followed automatically.
STAGE_MODULES: dict[str, str] = {
    "data": "lesionflow.data.dataset",
    "split": "lesionflow.data.split",
    "preprocess": "lesionflow.data.preprocess",
    "train": "lesionflow.model.train",
    "infer": "lesionflow.model.infer",
    "tune": "lesionflow.evaluation.tune",
    "evaluate": "lesionflow.evaluation.evaluate",
    "breakdown": "lesionflow.evaluation.breakdown",
    "analyse": "lesionflow.reports.analysis",
    "training_report": "lesionflow.reports.training_report",
}
# Extra files whose content decides a stage's artifacts.
_NOTEBOOK_RUNNER = ("scripts/notebook.py", "src/lesionflow/reports/notebook.py")
STAGE_FILES: dict[str, tuple[str, ...]] = {
    "analyse": ("notebooks/analysis.ipynb", *_NOTEBOOK_RUNNER),
    "training_report": ("notebooks/training_report.ipynb", *_NOTEBOOK_RUNNER),
}
# Settings that change how a job runs but not what it writes.
NOT_IN_KEY: dict[str, tuple[str, ...]] = {
    "train": ("device", "num_workers"),
    "infer": ("device", "batch_size"),
}
# For each stage, the stages whose artifacts it reads directly.
STAGE_INPUTS: dict[str, tuple[str, ...]] = {
    "data": (),
    "split": ("data",),
    "preprocess": ("data", "split"),
    "train": ("preprocess",),
    "infer": ("preprocess", "train"),
    "tune": ("data", "split", "infer"),
    "evaluate": ("data", "split", "preprocess", "infer", "tune"),
    "breakdown": ("evaluate",),
    "analyse": ("data", "split", "preprocess", "train", "infer", "tune", "evaluate", "breakdown"),
    "training_report": ("train",),
}
# Settings of the notebook stages: only what each notebook reads, so that changing one
# notebook's display settings never reruns the other.
NOTEBOOK_SETTINGS: dict[str, tuple[str, ...]] = {
    "analyse": ("dice_bands", "n_examples"),
    "training_report": ("dice_bands", "verdict_rules"),
}
STAGES = tuple(STAGE_INPUTS)


def _canonical(value: Any) -> Any:
    # One spelling per value: 1 and 1.0 must hash alike, dict order must not matter.
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return repr(float(value))
    if isinstance(value, dict):
        return {str(k): _canonical(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, list | tuple):
        return [_canonical(v) for v in value]
    raise TypeError(f"cannot put {type(value).__name__} into a content key")


def digest(value: Any, length: int = KEY_LENGTH) -> str:
    """Short blake2b hex digest of the canonical JSON of ``value``."""
    text = json.dumps(_canonical(value), sort_keys=True, separators=(",", ":"))
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()[:length]


# ---------------------------------------------------------------- code fingerprints


def _strip_docstrings(tree: ast.AST) -> ast.AST:
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (
            isinstance(node, ast.Module | ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
            and body
            and isinstance(body[0], ast.Expr)
            and isinstance(body[0].value, ast.Constant)
            and isinstance(body[0].value.value, str)
        ):
            node.body = body[1:] or [ast.Pass()]
    return tree


def _module_file(name: str) -> Path | None:
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        # `from lesionflow.pipeline.errors import LesionflowError` names a class, not a module.
        return None
    return Path(spec.origin) if spec and spec.origin else None


def _lesionflow_imports(tree: ast.AST) -> set[str]:
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("lesionflow"))
        elif (
            isinstance(node, ast.ImportFrom)
            and node.module
            and node.module.startswith("lesionflow")
        ):
            found.add(node.module)
            # `from lesionflow.evaluation import metrics` names a module, not an attribute.
            found.update(f"{node.module}.{a.name}" for a in node.names)
    return {name for name in found if _module_file(name) is not None}


def normalised_code(source: str) -> str:
    """The syntax tree of Python ``source`` without docstrings, comments or layout."""
    return ast.dump(_strip_docstrings(ast.parse(source)), include_attributes=False)


@cache
def _module_code(name: str) -> tuple[str, frozenset[str]]:
    path = _module_file(name)
    if path is None:
        raise LesionflowError(f"stage module {name} is missing from the lesionflow package")
    source = path.read_text()
    return normalised_code(source), frozenset(_lesionflow_imports(ast.parse(source)))


def module_closure(name: str) -> list[str]:
    """The module ``name`` and every lesionflow module it imports, transitively, sorted."""
    seen: set[str] = set()
    todo = [name]
    while todo:
        current = todo.pop()
        if current in seen or current == "lesionflow":
            continue
        seen.add(current)
        todo.extend(_module_code(current)[1])
    return sorted(seen)


def _notebook_code(path: Path) -> str:
    # Only code cells decide what a notebook computes; outputs and markdown do not.
    cells = json.loads(path.read_text()).get("cells", [])
    return json.dumps(["".join(c.get("source", "")) for c in cells if c.get("cell_type") == "code"])


@cache
def code_fingerprint(stage: str) -> str:
    """Hash of the code a stage runs, blind to comments, docstrings and formatting."""
    parts = {name: _module_code(name)[0] for name in module_closure(STAGE_MODULES[stage])}
    script = REPO_ROOT / "scripts" / f"{stage}.py"
    if script.exists():
        parts["script"] = normalised_code(script.read_text())
    for relative in STAGE_FILES.get(stage, ()):
        path = REPO_ROOT / relative
        if path.suffix == ".ipynb":
            parts[relative] = _notebook_code(path)
        elif path.suffix == ".py":
            parts[relative] = normalised_code(path.read_text())
        else:
            parts[relative] = path.read_text()
    return digest(parts, length=32)


# ---------------------------------------------------------------- dataset fingerprints


class FileHashCache:
    """Content hashes keyed on (path, size, mtime_ns, inode), so unchanged files are only stat'ed."""

    def __init__(self, path: Path):
        self.path = path
        self.entries: dict[str, str] = {}
        self.dirty = False
        if path.exists():
            try:
                self.entries = json.loads(path.read_text())
            except (OSError, json.JSONDecodeError):
                self.entries = {}

    def content_hash(self, file: Path) -> str:
        """blake2b of the file's bytes, from the cache when its stat is unchanged."""
        stat = file.stat()
        token = f"{file.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{stat.st_ino}"
        if token not in self.entries:
            hasher = hashlib.blake2b(digest_size=16)
            with open(file, "rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    hasher.update(block)
            self.entries[token] = hasher.hexdigest()
            self.dirty = True
        return self.entries[token]

    def save(self) -> None:
        """Write the cache back if anything was hashed."""
        if self.dirty:
            write_json(self.path, self.entries)
            self.dirty = False


def manifest_fingerprint(manifest: Path, cache: FileHashCache) -> str:
    """Hash of a user manifest's rows with every listed file replaced by its content hash.

    Paths themselves are left out, so moving or renaming the dataset keeps its key.
    """
    if not manifest.exists():
        raise LesionflowError(f"manifest {manifest} (config key 'data.manifest') does not exist")
    with open(manifest, newline="") as handle:
        rows = list(csv.DictReader(handle))
    missing = {"image", "mask", "subject"} - set(rows[0] if rows else {})
    if missing:
        raise LesionflowError(
            f"manifest {manifest} lacks the column(s) {', '.join(sorted(missing))}"
        )
    fingerprinted = []
    for row in rows:
        entry = {k: v for k, v in row.items() if k not in ("image", "mask")}
        entry.setdefault("image_id", Path(row["image"]).stem)
        for column in ("image", "mask"):
            file = manifest.parent / (row[column] or "")
            # A missing file is part of the fingerprint, not an error here: the data stage's
            # manifest check then reports every missing file at once, with its row.
            entry[column] = cache.content_hash(file) if file.is_file() else f"missing:{row[column]}"
        fingerprinted.append(entry)
    cache.save()
    return digest(fingerprinted, length=32)


# ---------------------------------------------------------------- the plan


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
        return f"results/{self.stage}/{self.key}"


@dataclass
class Plan:
    """Every job of every run, and each run's key per stage."""

    runs: dict[str, dict[str, str]] = field(default_factory=dict)
    jobs: dict[str, dict[str, Job]] = field(default_factory=lambda: {s: {} for s in STAGES})
    baseline: str = ""
    dataset_fingerprint: str = ""

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


def _key_settings(stage: str, settings: dict[str, Any]) -> dict[str, Any]:
    drop = NOT_IN_KEY.get(stage, ())
    return {
        section: {k: v for k, v in values.items() if k not in drop}
        if isinstance(values, dict) and section == stage
        else values
        for section, values in settings.items()
    }


def _data_settings(config: ResolvedConfig, workdir: Path) -> tuple[dict, dict]:
    data = config.data
    if data["source"] == "synthetic":
        settings = {"source": "synthetic", "synthetic": data["synthetic"]}
        return settings, settings
    manifest = (workdir / data["manifest"]).resolve()
    cache = FileHashCache(workdir / ".lesionflow" / "file-hashes.json")
    fingerprint = manifest_fingerprint(manifest, cache)
    masks = {"mask_channel": data["mask_channel"], "mask_threshold": data["mask_threshold"]}
    return {"source": "manifest", "manifest": str(manifest), **masks}, {
        "source": "manifest",
        "fingerprint": fingerprint,
        **masks,
    }


def _stage_settings(stage: str, run: dict[str, Any]) -> dict[str, Any]:
    if stage == "train":
        return {"model": run["model"], "train": run["train"]}
    if stage == "breakdown":
        return {}
    if stage in NOTEBOOK_SETTINGS:
        return {"analyse": {key: run["analyse"][key] for key in NOTEBOOK_SETTINGS[stage]}}
    return {stage: run[stage]}


def build_plan(config: ResolvedConfig, workdir: str | Path = ".") -> Plan:
    """Compute every artifact's key for every run of ``config``."""
    workdir = Path(workdir)
    plan = Plan(baseline=config.baseline)
    data_settings, data_key_params = _data_settings(config, workdir)
    # What identifies the dataset in reports: its generator settings or its files' content.
    plan.dataset_fingerprint = digest(data_key_params, length=16)
    shared = {
        "data": (data_settings, data_key_params),
        "split": (config.split, config.split),
    }
    for name, run in config.runs.items():
        keys: dict[str, str] = {}
        for stage in STAGES:
            if stage in shared:
                settings, key_params = shared[stage]
            else:
                settings = _stage_settings(stage, run)
                key_params = _key_settings(stage, settings)
            inputs = {upstream: keys[upstream] for upstream in STAGE_INPUTS[stage]}
            key = digest(
                {
                    "stage": stage,
                    "params": key_params,
                    "inputs": inputs,
                    "code": code_fingerprint(stage),
                }
            )
            keys[stage] = key
            plan.jobs[stage].setdefault(key, Job(stage, key, settings, inputs))
        plan.runs[name] = keys
    return plan


def settings_json(plan: Plan, stage: str, key: str) -> str:
    """The settings a stage's job receives, as compact JSON for its command line."""
    return json.dumps(plan.job(stage, key).settings, sort_keys=True, separators=(",", ":"))


# ---------------------------------------------------------------- one plan for a whole run

# The environment variable through which cluster jobs find the plan their Snakemake made.
PLAN_ENV = "LESIONFLOW_PLAN"


def _config_digest(config: ResolvedConfig) -> str:
    return digest(
        {"data": config.data, "split": config.split, "runs": config.runs, "compare": config.compare},
        length=32,
    )


def plan_record(plan: Plan, config: ResolvedConfig) -> dict[str, Any]:
    """The plan as JSON-ready data, with a digest of the config it was made from."""
    return {
        "config_digest": _config_digest(config),
        "baseline": plan.baseline,
        "dataset_fingerprint": plan.dataset_fingerprint,
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
    )
    for stage, jobs in record["jobs"].items():
        plan.jobs[stage] = {
            key: Job(stage, key, job["settings"], job["inputs"]) for key, job in jobs.items()
        }
    return plan


def shared_plan(config: ResolvedConfig, workdir: str | Path, environ: dict[str, str]) -> Plan:
    """The plan of this Snakemake run: the one its main process wrote, or a new one.

    A cluster job parses the Snakefile again; recomputing the keys there would pick up any code
    edited since the run started and ask for artifacts that the run never planned. So the main
    process writes its plan to ``.lesionflow/plans/`` and names it in ``environ[PLAN_ENV]``, and
    a job reuses it when it was made from the same config.
    """
    path = environ.get(PLAN_ENV)
    if path and Path(path).is_file():
        record = json.loads(Path(path).read_text())
        if record.get("config_digest") == _config_digest(config):
            return plan_from_record(record)
    plan = build_plan(config, workdir)
    record = plan_record(plan, config)
    target = Path(workdir) / ".lesionflow" / "plans" / f"{digest(record, length=16)}.json"
    if not target.is_file():
        write_json(target, record)
    environ[PLAN_ENV] = str(target.resolve())
    return plan
