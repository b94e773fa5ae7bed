"""`lesionflow export RUN OUT`: one finished segmentation run as a self-contained folder.

The bundle holds the model (state dict and TorchScript), the settings predict needs, the locked
post-processing, the metrics with their intervals and the provenance, with a predict.py that
gives the run's locked masks. It must never change or add to a run's artifacts, and never leave a
half-written bundle: it is built beside OUT and renamed into place.
"""

from __future__ import annotations

import os
import shutil
import uuid
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import monai
import nibabel
import torch

import lesionflow
from lesionflow.data.manifest import modality_columns, read_manifest
from lesionflow.io.readers import file_suffix
from lesionflow.model.infer import load_model
from lesionflow.model.networks import segmentation_network
from lesionflow.pipeline.artifacts import atomic_path, read_json, write_json, write_text
from lesionflow.pipeline.errors import LesionflowError
from lesionflow.review.bundle_predict import BUNDLE_FILE, BUNDLE_FORMAT, LOCKED_FILE, MODEL_FILE

TORCHSCRIPT_FILE = "network_torchscript.pt"
METRICS_FILE = "metrics.json"
PROVENANCE_FOLDER = "provenance"
# The artifacts a bundle is made from, by stage; their folder is results/<stage>/<key>.
SOURCES = {
    "data": ("manifest.csv",),
    "preprocess": ("preprocess.json",),
    "train": ("model.pt",),
    "infer": ("test_infer.json",),
    "tune": ("locked.json",),
    "evaluate": ("summary.json",),
}
# The infer settings that change a map but are not in the infer stage's record.
INFER_KEYS = ("batch_size", "sw_overlap")
# What torch.jit.script raises for Python it cannot compile (an unsupported construct, a type it
# cannot infer, source code it cannot read).
SCRIPT_ERRORS = (torch.jit.frontend.FrontendError, RuntimeError, OSError, TypeError, NotImplementedError)

PREDICT_SCRIPT = '''#!/usr/bin/env python3
"""Locked lesion masks of images or volumes with this bundle's run (see README.md).

It must never do more than hand its arguments to lesionflow.review.bundle_predict.
"""

from pathlib import Path

from lesionflow.review.bundle_predict import main

if __name__ == "__main__":
    main(Path(__file__).resolve().parent)
'''


def source_files(folders: Mapping[str, os.PathLike | str], run: str) -> dict[str, Path]:
    """Each artifact a bundle is made from, by ``stage/file``; a LesionflowError names the first missing.

    A run without one of the stages (an external or ensemble run has no train stage, a regression
    run no tune) cannot be exported, and the error says so.
    """
    files = {}
    for stage, names in SOURCES.items():
        if stage not in folders:
            raise LesionflowError(
                f"run {run} has no {stage} stage: only segmentation runs that train a model "
                "(source: model) can be exported"
            )
        for name in names:
            path = Path(folders[stage]) / name
            if not path.is_file():
                raise LesionflowError(
                    f"{path} does not exist: run the {stage} stage of run {run} before exporting it"
                )
            files[f"{stage}/{name}"] = path
    return files


def infer_settings(settings: Mapping[str, Mapping[str, Any]], record: Mapping[str, Any], run: str) -> dict:
    """The infer settings predict repeats: the record's TTA and windows, the job's batch size and overlap.

    ``settings`` maps each stage to what its job received (``{"infer": {...}}`` for infer); its
    TTA must be the record's, or the settings are not this run's.
    """
    section = dict(settings.get("infer", {}).get("infer") or {})
    missing = [key for key in ("tta", *INFER_KEYS) if key not in section]
    if missing:
        raise LesionflowError(f"run {run}: the infer settings lack infer.{missing[0]}")
    if list(section["tta"]) != list(record["tta"]):
        raise LesionflowError(
            f"run {run}: infer.tta {section['tta']} differs from {record['tta']} of the infer stage's "
            "record; the settings given are not this run's"
        )
    kept = ("tta", "window", "stride", "stitch_weights", "presence_head")
    return {**{key: record[key] for key in kept}, **{key: section[key] for key in INFER_KEYS}}


def scripted_network(network: torch.nn.Module, example: torch.Tensor) -> tuple[torch.jit.ScriptModule, str]:
    """``network`` as TorchScript, and how: ``script`` (any input size), else ``trace`` on ``example``.

    Every network of lesionflow's registry scripts; tracing is the fallback for one that does not.
    """
    # TorchScript is deprecated in recent torch in favour of torch.export, yet it is what loads with
    # torch alone at any input size; torch.export needs each network's size constraints declared and
    # took 4-9 s per MONAI network where scripting takes under 1 s.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            return torch.jit.script(network), "script"
        except SCRIPT_ERRORS:
            with torch.no_grad():
                return torch.jit.trace(network, example), "trace"


def _check_out(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise LesionflowError(f"{out} exists and is not an empty folder: give a new folder for the bundle")


def _copy(source: Path, target: Path) -> None:
    with atomic_path(target) as tmp:
        shutil.copyfile(source, tmp)


def _write_torchscript(model_file: Path, folder: Path) -> dict[str, Any]:
    model, checkpoint = load_model(model_file, torch.device("cpu"))
    roi = checkpoint.get("roi_size") or checkpoint.get("patch_size")
    example = torch.zeros((1, checkpoint["in_channels"], *roi))
    scripted, how = scripted_network(segmentation_network(model), example)
    with atomic_path(folder / TORCHSCRIPT_FILE) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.save(scripted, str(tmp))
    return {
        "file": MODEL_FILE,
        "torchscript": TORCHSCRIPT_FILE,
        "torchscript_made_by": how,
        **{key: checkpoint["model_settings"][key] for key in ("network", "spatial_dims", "kwargs")},
        "in_channels": checkpoint["in_channels"],
        "out_channels": checkpoint.get("out_channels", 1),
        "presence_head": bool(checkpoint.get("presence_head", False)),
        "roi_size": roi,
    }


def _inputs(manifest_path: Path, run: str) -> dict[str, Any]:
    manifest = read_manifest(manifest_path)
    extra = modality_columns(manifest.columns)
    if extra:
        raise LesionflowError(
            f"run {run}: its images are stacked from several files per case ({', '.join(extra)} in "
            f"{manifest_path}); a bundle's predict takes one file per image"
        )
    return {"source_suffixes": sorted({file_suffix(path) for path in manifest["image"]})}


def _bundle_record(
    run: str, folders: Mapping[str, os.PathLike | str], files: Mapping[str, Path], model: dict, infer: dict
) -> dict[str, Any]:
    preprocess = read_json(files["preprocess/preprocess.json"])
    return {
        "format": BUNDLE_FORMAT,
        "run": run,
        "task": "segmentation",
        "lesionflow_version": lesionflow.__version__,
        "versions": {"torch": torch.__version__, "monai": monai.__version__, "nibabel": nibabel.__version__},
        "stage_keys": {stage: Path(folder).name for stage, folder in folders.items()},
        "model": model,
        "inputs": {
            "channels": model["in_channels"],
            "spatial_dims": model["spatial_dims"],
            **_inputs(files["data/manifest.csv"], run),
        },
        "preprocess": {"settings": preprocess["settings"], "identity": preprocess["identity"]},
        "infer": infer,
        "postprocess": read_json(files["tune/locked.json"]),
        "metrics": METRICS_FILE,
    }


def readme_text(record: Mapping[str, Any]) -> str:
    """The bundle's README.md: what it holds, how to predict with it and what that needs."""
    model = record["model"]
    locked = record["postprocess"]
    return f"""# lesionflow run bundle: {record["run"]}

Made by lesionflow {record["lesionflow_version"]} (torch {record["versions"]["torch"]}, MONAI \
{record["versions"]["monai"]}, nibabel {record["versions"]["nibabel"]}).

## Predict

    python predict.py IMAGE_OR_FOLDER... --out DIR [--device cpu|cuda]

Each image (PNG, JPEG, TIFF pictures; NIfTI volumes) gets its locked lesion mask in DIR, named
`<file name less suffix><suffix>` as the run's export stage names it: a 0/255 PNG for a picture,
a `.nii.gz` with the source's affine and header for a volume. The images are prepared, predicted
(TTA {", ".join(record["infer"]["tta"])}) and post-processed (threshold {locked["threshold"]},
minimum lesion area {locked["min_lesion_area"]}, presence gate on {locked["presence_score"]}) exactly
as the pipeline did, so the run's own images give its masks exactly (on the CPU; `--device cuda` may
differ by rounding).

It needs the `lesionflow` package at version {record["lesionflow_version"]} (with torch, MONAI and
nibabel); another version warns, and its masks may differ.

## Contents

- `{MODEL_FILE}`: the state dict and what rebuilds the network ({model["network"]}, \
{model["spatial_dims"]}D, {model["in_channels"]} input channel(s)).
- `{TORCHSCRIPT_FILE}`: the segmentation network alone as TorchScript; it needs only torch:
  `torch.jit.load("{TORCHSCRIPT_FILE}")(x)` gives the logits of a prepared `(B, C, *spatial)` batch,
  without the preprocessing, TTA, stitching and post-processing that predict.py adds.
- `{BUNDLE_FILE}`: preprocessing, inference and locked post-processing settings, the model's inputs.
- `{LOCKED_FILE}`: the post-processing chosen on validation and locked (tune stage).
- `{METRICS_FILE}`: the run's validation and test metrics with their intervals (evaluate stage).
- `{PROVENANCE_FOLDER}/`: the provenance record of each stage of the run.
"""


def _write_contents(
    folder: Path, run: str, folders: Mapping[str, os.PathLike | str], files: Mapping[str, Path], infer: dict
) -> None:
    _copy(files["train/model.pt"], folder / MODEL_FILE)
    model = _write_torchscript(folder / MODEL_FILE, folder)
    record = _bundle_record(run, folders, files, model, infer)
    _copy(files["tune/locked.json"], folder / LOCKED_FILE)
    _copy(files["evaluate/summary.json"], folder / METRICS_FILE)
    for stage, stage_folder in folders.items():
        # provenance.json, or one record per subset job (provenance_val.json): <stage>[_<subset>].json
        for provenance in sorted(Path(stage_folder).glob("provenance*.json")):
            name = stage + provenance.stem.removeprefix("provenance")
            _copy(provenance, folder / PROVENANCE_FOLDER / f"{name}.json")
    write_text(folder / "predict.py", PREDICT_SCRIPT)
    (folder / "predict.py").chmod(0o755)
    write_text(folder / "README.md", readme_text(record))
    write_json(folder / BUNDLE_FILE, record)


def export_bundle(
    folders: Mapping[str, os.PathLike | str],
    run: str,
    out: os.PathLike | str,
    settings: Mapping[str, Mapping[str, Any]],
) -> Path:
    """Write the bundle of segmentation run ``run`` into the new or empty folder ``out``; return it.

    ``folders`` maps each stage of the run to its artifact folder (``results/<stage>/<key>``);
    ``settings`` maps each stage to the settings its job received (the plan's), of which the
    bundle reads the infer stage's batch size and window overlap. Raises LesionflowError when
    ``out`` is not empty, or naming the first missing stage or artifact.
    """
    out = Path(out)
    _check_out(out)
    files = source_files(folders, run)
    record = read_json(files["infer/test_infer.json"])
    if "classes" in record:
        raise LesionflowError(
            f"lesionflow export: run {run!r} predicts several lesion classes "
            f"({', '.join(record['classes'])}), which a bundle's predict.py does not apply yet"
        )
    infer = infer_settings(settings, record, run)
    out.parent.mkdir(parents=True, exist_ok=True)
    # A hidden sibling on the same file system, so the final rename is one atomic step.
    building = out.parent / f".{out.name}.{uuid.uuid4().hex}.tmp"
    building.mkdir()
    try:
        _write_contents(building, run, folders, files, infer)
        _check_out(out)
        if out.exists():
            out.rmdir()
        os.replace(building, out)
    finally:
        if building.exists():
            shutil.rmtree(building)
    return out
