"""Benchmark: peak memory (RSS) of the data, preprocess, infer, tune and evaluate stages on 256³ volumes.

It never writes outside a temporary folder, except the JSON report (``--out``), and never fixes a
number: every peak and reference is measured in the same run.

The claim checked: every stage holds one volume plus one batch of patches at a time, so its peak
does not grow with the number of volumes, and evaluating a subset never holds all its volumes at
once. The volumes are our own: K = 6 head-like volumes of SIZE³ voxels (1 mm, RAS), a bright
ellipsoid with dark ventricles, a brighter rim and noise, stored as int16 ``.nii.gz``, with a few
small bright lesions whose uint8 0/1 masks are written beside them (nibabel, gzip level 1). Unlike
``synthetic_brain`` (256 x 256 x ~140 with thick slices), they are truly SIZE³. Split: volumes 0-1
are val, 2-5 test, one subject each. Each measurement runs in a fresh Python process:

- bare references, in the same run: one per stage, a process that makes the stage module's
  imports and reads ONE source volume as float32 with its mask (``io.readers.read_image`` /
  ``read_mask``), i.e. "imports + one volume", the least a stage reading these volumes can need
  (imports differ a lot: preprocess pulls in torch through ``data.geometry``, as infer does);
- data (``run_data``, source manifest: the manifest check and the tables) of 2 and of 6 volumes;
- preprocess (crop the field of view, percentile normalisation, no tiles) of 2 and of 6 volumes;
- infer (untrained default 3D MONAI UNet, windows of ROI = [96, 96, 64] scaled by SIZE / 256,
  TTA identity + flip2, batch 2, CPU) of val (2 volumes) and of test (4), on the 6-volume
  preprocess output;
- tune on val (2 volumes, once: its subset is val), and evaluate (image and tile level, as the
  pipeline runs it) of val + a test of 2 and of val + the test of 4: the "few" test maps are the
  first two of the test file, copied entry by entry.

The ratio peak(many) / peak(few) should stay near 1 and each peak a small multiple of its stage's
bare reference. Peaks are ``ru_maxrss``; the parent imports nothing heavy, since a child's
``ru_maxrss`` starts from its parent's resident size (see bench/memory.py). As there, expect a few
tens of MiB of growth over the first volumes from glibc's rising mmap threshold (preprocess of 6
volumes: +29 MiB over 2; flat with MALLOC_MMAP_THRESHOLD_=1048576). On 2 CPUs it takes about
5 minutes at the default size (seconds grow with other load on the machine); develop with
``--size 64`` (1 minute):

    .venv/bin/python bench/volume_memory.py [--size 256] [--out bench/out/volume_memory.json]
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

import children
from children import peak_mb, save_untrained_model, write_csv

DEFAULT_OUT = Path(__file__).resolve().parent / "out" / "volume_memory.json"
DEFAULT_SIZE = 256
N_VAL, N_TEST, N_TEST_FEW = 2, 4, 2
N_VOLUMES = N_VAL + N_TEST
N_FEW = 2
SEED = 0
DATA = {
    "source": "manifest", "mask_channel": None, "mask_threshold": None,
    "score_column": None, "score_range": None, "invalid_scores": "error",
}
PREPROCESS = {"crop_field_of_view": True, "normalise": "percentile"}
INFER = {"tta": ["identity", "flip2"], "batch_size": 2, "device": "cpu"}
MODEL_SETTINGS = {"network": "UNet", "spatial_dims": 3, "kwargs": {}}
# The window at 256³; at other sizes it is scaled alike (to multiples of 8, the UNet's
# downsampling), so a small development run has as many windows per volume as the real one.
ROI_AT_256 = (96, 96, 64)
# The stage modules whose imports each bare reference makes.
STAGE_MODULES = {
    "data": "lesionflow.data.dataset",
    "preprocess": "lesionflow.data.preprocess",
    "infer": "lesionflow.model.infer",
    "tune": "lesionflow.evaluation.tune",
    "evaluate": "lesionflow.evaluation.evaluate",
}
STAGES = tuple(STAGE_MODULES)


# ---------------------------------------------------------------- children (one measurement each)


def roi_size(size: int) -> list[int]:
    """The inference window for volumes of ``size``³: ROI_AT_256 scaled, at least 8 per side."""
    return [max(8, round(side * size / 256 / 8) * 8) for side in ROI_AT_256]


def head_volume(size: int, seed: int) -> tuple[Any, Any]:
    """A head-like int16 volume of ``size``³ voxels and its uint8 0/1 lesion mask."""
    import numpy as np

    rng = np.random.default_rng(seed)
    centre = size / 2 + rng.uniform(-0.03, 0.03, 3) * size
    radii = np.array([0.36, 0.43, 0.38]) * size * rng.uniform(0.95, 1.05, 3)
    axes = np.ogrid[:size, :size, :size]
    # Squared normalised distance from the centre: < 1 inside the head, float32 to stay small.
    distance = sum(((axis - c) / r) ** 2 for axis, c, r in zip(axes, centre, radii, strict=True))
    distance = distance.astype(np.float32)
    image = rng.normal(0, 8, (size,) * 3).astype(np.float32)
    np.abs(image, out=image)
    image[distance < 1.0] += 500
    image[(distance > 0.8) & (distance < 1.0)] += 250  # a brighter rim, like scalp fat
    ventricles = sum(((axis - c) / (0.25 * r)) ** 2 for axis, c, r in zip(axes, centre, radii, strict=True))
    image[ventricles < 1.0] -= 400
    del distance, ventricles
    image[image > 0] += rng.normal(0, 20, int((image > 0).sum())).astype(np.float32)
    mask = np.zeros((size,) * 3, dtype=np.uint8)
    for _ in range(rng.integers(3, 7)):
        radius = rng.uniform(1.0, 4.0) * max(1.0, size / 128)
        at = centre + rng.uniform(-0.4, 0.4, 3) * radii
        box = tuple(
            slice(max(0, int(a - radius) - 1), min(size, int(a + radius) + 2)) for a in at
        )
        grid = np.ogrid[box]
        ball = sum((g - a) ** 2 for g, a in zip(grid, at, strict=True)) <= radius**2
        mask[box][ball] = 1
        image[box][ball] += 350
    return np.clip(image, 0, 32767).astype(np.int16), mask


def child_generate(job: dict[str, Any]) -> dict[str, Any]:
    """Write the K volumes and masks as .nii.gz and a manifest of them; return its path."""
    import nibabel as nib
    import numpy as np

    out, size = Path(job["out"]), job["size"]
    out.mkdir(parents=True, exist_ok=True)
    affine = np.diag([1.0, 1.0, 1.0, 1.0])
    affine[:3, 3] = -size / 2
    rows, lesion_voxels = [], []
    start = time.perf_counter()
    for index in range(N_VOLUMES):
        image, mask = head_volume(size, SEED + index)
        image_id = f"vol{index:02d}"
        nib.Nifti1Image(image, affine).to_filename(out / f"{image_id}.nii.gz")
        nib.Nifti1Image(mask, affine).to_filename(out / f"{image_id}_mask.nii.gz")
        rows.append({"image_id": image_id, "subject": f"subject{index:02d}",
                     "image": f"{image_id}.nii.gz", "mask": f"{image_id}_mask.nii.gz"})
        lesion_voxels.append(int(mask.sum()))
    manifest = write_csv(out / "manifest.csv", rows, ["image_id", "subject", "image", "mask"])
    return {"manifest": str(manifest), "seconds": time.perf_counter() - start,
            "lesion_voxels": lesion_voxels}


def child_bare(job: dict[str, Any]) -> dict[str, Any]:
    """One stage module's imports, then one source volume (float32) and its mask."""
    import importlib

    importlib.import_module(job["module"])
    from lesionflow.io.readers import read_image, read_mask

    imports = peak_mb()
    start = time.perf_counter()
    image = read_image(job["image"]).array
    mask = read_mask(job["mask"]).array
    return {
        "imports_mb": imports,
        "peak_rss_mb": peak_mb(),
        "seconds": time.perf_counter() - start,
        "image_shape": list(image.shape),
        "lesion_voxels": int(mask.sum()),
    }


def timed(call: Any, n_images: int) -> dict[str, Any]:
    """Run ``call()`` and return its seconds, this process's peak and ``n_images``."""
    start = time.perf_counter()
    call()
    return {"seconds": time.perf_counter() - start, "peak_rss_mb": peak_mb(), "n_images": n_images}


def child_data(job: dict[str, Any]) -> dict[str, Any]:
    """The data stage on a manifest: the manifest check, then the image and lesion tables."""
    from lesionflow.data.dataset import run_data

    settings = {**DATA, "manifest": job["manifest"]}
    return timed(lambda: run_data(settings, job["out"]), job["n_images"])


def child_preprocess(job: dict[str, Any]) -> dict[str, Any]:
    """The preprocess stage on one manifest; its record carries its own peak RSS."""
    from lesionflow.data.preprocess import run_preprocess
    from lesionflow.pipeline.config import complete_run_section

    settings = complete_run_section("preprocess", PREPROCESS)
    result = timed(lambda: run_preprocess(job["manifest"], job["split"], settings, job["out"]),
                   job["n_images"])
    record = json.loads((Path(job["out"]) / "preprocess.json").read_text())
    return {**result, "stage_peak_rss_mb": record["peak_rss_mb"], "stage_seconds": record["seconds"]}


def child_checkpoint(job: dict[str, Any]) -> dict[str, Any]:
    """Save an untrained UNet as the train stage saves model.pt (weights + model_info)."""
    return save_untrained_model(job["model"], MODEL_SETTINGS, 1, job["roi_size"], SEED)


def child_infer(job: dict[str, Any]) -> dict[str, Any]:
    """The infer stage on one subset; its summary carries its own peak RSS."""
    from lesionflow.model.infer import run_infer
    from lesionflow.pipeline.config import complete_run_section

    settings = {"infer": complete_run_section("infer", INFER)}
    summary: dict[str, Any] = {}
    result = timed(
        lambda: summary.update(run_infer(job["images"], job["preprocess"], job["model"], settings,
                                         job["subset"], job["out"])),
        job["n_images"],
    )
    return {**result, "stage_peak_rss_mb": summary["peak_rss_mb"], "stage_seconds": summary["seconds"],
            "window": summary["window"], "stride": summary["stride"]}


def child_tune(job: dict[str, Any]) -> dict[str, Any]:
    """The tune stage on the val probability maps; writes locked.json."""
    from lesionflow.evaluation.tune import run_tune
    from lesionflow.pipeline.config import complete_run_section

    settings = complete_run_section("tune", {})
    locked: dict[str, Any] = {}
    result = timed(
        lambda: locked.update(run_tune(job["manifest"], job["split"], job["probs"], settings, job["out"])),
        job["n_images"],
    )
    return {**result, "locked": {key: locked[key] for key in ("threshold", "min_lesion_area")}}


def child_evaluate(job: dict[str, Any]) -> dict[str, Any]:
    """The evaluate stage on val and test, image and tile level, with the locked settings."""
    from lesionflow.evaluation.evaluate import run_evaluate
    from lesionflow.pipeline.config import complete_run_section

    settings = complete_run_section("evaluate", {})
    return timed(
        lambda: run_evaluate(job["manifest"], job["split"], job["val"], job["test"], job["locked"],
                             settings, job["out"], tiles=job["tiles"]),
        job["n_images"],
    )


CHILDREN = {
    "generate": child_generate, "bare": child_bare, "data": child_data, "preprocess": child_preprocess,
    "checkpoint": child_checkpoint, "infer": child_infer, "tune": child_tune, "evaluate": child_evaluate,
}


# ---------------------------------------------------------------- parent


def run_child(kind: str, job: dict[str, Any]) -> dict[str, Any]:
    """Run one measurement of this script in a fresh interpreter, printing how long it took."""
    start = time.perf_counter()
    result = children.run_child(__file__, kind, job)
    print(f"  {kind:<11} {time.perf_counter() - start:6.1f}s", file=sys.stderr)
    return result


def read_rows(path: Path) -> list[dict[str, str]]:
    """The rows of a CSV file."""
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def copy_entries(source: Path, target: Path, names: set[str]) -> Path:
    """Copy the arrays ``names`` of an .npz into a new one, streamed in chunks (nothing held whole)."""
    with zipfile.ZipFile(source) as inside, zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as out:
        for info in inside.infolist():
            if info.filename.removesuffix(".npy") in names:
                with inside.open(info) as read, out.open(info.filename, "w", force_zip64=True) as write:
                    shutil.copyfileobj(read, write, 1 << 20)
    return target


def few_split(split: Path, keep: set[str], target: Path) -> Path:
    """``split`` with only the rows (items or their source images) in ``keep``."""
    rows = read_rows(split)
    columns = list(rows[0])
    source = "source_image_id" if "source_image_id" in columns else "image_id"
    return write_csv(target, [row for row in rows if row[source] in keep], columns)


def measure(size: int, work: Path) -> dict[str, Any]:
    """Every measurement of the benchmark, each in its own process, as one result dict."""
    generated = run_child("generate", {"out": str(work / "volumes"), "size": size})
    source = read_rows(Path(generated["manifest"]))
    first = source[0]
    volumes = work / "volumes"
    bare = {
        stage: run_child("bare", {"module": module, "image": str(volumes / first["image"]),
                                  "mask": str(volumes / first["mask"])})
        for stage, module in STAGE_MODULES.items()
    }

    data: dict[str, dict[str, Any]] = {}
    for label, n in (("few", N_FEW), ("many", N_VOLUMES)):
        # Beside the volumes: a manifest's paths are relative to its folder.
        manifest = write_csv(volumes / f"source_{n}.csv", source[:n], list(source[0]))
        data[label] = run_child("data", {"manifest": str(manifest), "out": str(work / f"data_{n}"),
                                         "n_images": n})
    rows = read_rows(work / f"data_{N_VOLUMES}" / "manifest.csv")
    manifest_columns = list(rows[0])
    manifest = work / f"data_{N_VOLUMES}" / "manifest.csv"
    subsets = ["val"] * N_VAL + ["test"] * N_TEST
    split = write_csv(
        work / "split.csv",
        [{**row, "split": subset} for row, subset in zip(rows, subsets, strict=True)],
        ["image_id", "subject", "split"],
    )

    preprocess: dict[str, dict[str, Any]] = {}
    for label, n in (("few", N_FEW), ("many", N_VOLUMES)):
        subset_manifest = write_csv(work / f"manifest_{n}.csv", rows[:n], manifest_columns)
        preprocess[label] = run_child(
            "preprocess", {"manifest": str(subset_manifest), "split": str(split),
                           "out": str(work / f"preprocess_{n}"), "n_images": n},
        )

    model = work / "model.pt"
    roi = roi_size(size)
    checkpoint = run_child("checkpoint", {"model": str(model), "roi_size": roi})
    prepared = work / f"preprocess_{N_VOLUMES}"
    infer_out = work / "infer"
    infer = {
        label: run_child(
            "infer", {"images": str(prepared / "images.csv"), "preprocess": str(prepared / "preprocess.json"),
                      "model": str(model), "subset": subset, "out": str(infer_out), "n_images": n},
        )
        for label, subset, n in (("few", "val", N_VAL), ("many", "test", N_TEST))
    }

    tune = run_child("tune", {"manifest": str(manifest), "split": str(split),
                              "probs": str(infer_out / "val.npz"), "out": str(work / "tune"),
                              "n_images": N_VAL})

    keep = {row["image_id"] for row in rows[: N_VAL + N_TEST_FEW]}
    few = work / "few"
    few.mkdir()
    items = read_rows(prepared / "split.csv")
    kept_items = {row["image_id"] for row in items if row["source_image_id"] in keep}
    inputs = {
        "few": {
            "split": few_split(split, keep, few / "split.csv"),
            "test": copy_entries(infer_out / "test.npz", few / "test.npz", keep),
            "tiles_split": few_split(prepared / "split.csv", keep, few / "tiles_split.csv"),
            "tiles_test": copy_entries(infer_out / "test_tiles.npz", few / "test_tiles.npz", kept_items),
        },
        "many": {"split": split, "test": infer_out / "test.npz", "tiles_split": prepared / "split.csv",
                 "tiles_test": infer_out / "test_tiles.npz"},
    }
    evaluate = {
        label: run_child(
            "evaluate",
            {"manifest": str(manifest), "split": str(given["split"]), "val": str(infer_out / "val.npz"),
             "test": str(given["test"]), "locked": str(work / "tune" / "locked.json"),
             "out": str(work / f"evaluate_{label}"), "n_images": n,
             "tiles": {"manifest": str(prepared / "manifest.csv"), "split": str(given["tiles_split"]),
                       "images": str(prepared / "images.csv"), "val": str(infer_out / "val_tiles.npz"),
                       "test": str(given["tiles_test"])}},
        )
        for label, given, n in (("few", inputs["few"], N_VAL + N_TEST_FEW),
                                ("many", inputs["many"], N_VAL + N_TEST))
    }
    return {"generated": generated, "bare": bare, "data": data, "preprocess": preprocess,
            "checkpoint": checkpoint, "roi_size": roi, "infer": infer, "tune": {"only": tune},
            "evaluate": evaluate}


def entry(result: dict[str, Any], bare: float) -> dict[str, Any]:
    """One measurement as reported: volumes, peak, peak over the bare reference, seconds."""
    return {
        "volumes": result["n_images"],
        "peak_rss_mb": round(result["peak_rss_mb"], 1),
        "vs_bare": round(result["peak_rss_mb"] / bare, 3),
        "seconds": round(result["seconds"], 2),
        "seconds_per_volume": round(result["seconds"] / result["n_images"], 2),
    }


def report(measured: dict[str, Any], size: int) -> dict[str, Any]:
    """The JSON report: references, peaks, ratios many / few, seconds."""
    result: dict[str, Any] = {
        "volume_shape": [size] * 3,
        "volumes": {"count": N_VOLUMES, "dtype": "int16 .nii.gz, masks uint8 0/1 .nii.gz",
                    "spacing_mm": [1.0] * 3, "generator": "bench/volume_memory.py head_volume",
                    "lesion_voxels": measured["generated"]["lesion_voxels"],
                    "generation_seconds": round(measured["generated"]["seconds"], 1)},
        "split": {"val": N_VAL, "test": N_TEST, "test_few": N_TEST_FEW},
        "preprocess_settings": PREPROCESS,
        "infer_settings": INFER,
        "model": {**MODEL_SETTINGS, "roi_size": measured["roi_size"], "trained": False,
                  "parameters": measured["checkpoint"]["parameters"]},
        "bare_reference": {
            stage: {"what": f"imports of {STAGE_MODULES[stage]} + one volume (float32) and its mask",
                    "imports_mb": round(bare["imports_mb"], 1), "peak_rss_mb": round(bare["peak_rss_mb"], 1),
                    "image_shape": bare["image_shape"]}
            for stage, bare in measured["bare"].items()
        },
    }
    for stage in STAGES:
        bare = measured["bare"][stage]["peak_rss_mb"]
        runs = measured[stage]
        result[stage] = {label: entry(run, bare) for label, run in runs.items()}
        if "locked" in runs.get("only", {}):
            result[stage]["locked"] = runs["only"]["locked"]
        if "few" in runs:
            result[stage]["ratio_many_over_few"] = round(
                runs["many"]["peak_rss_mb"] / runs["few"]["peak_rss_mb"], 3
            )
    return result


def print_table(result: dict[str, Any]) -> None:
    """A compact table: each stage's reference, its peaks few / many, the ratio and seconds."""
    print(f"volumes {'x'.join(map(str, result['volume_shape']))}, model roi {result['model']['roi_size']}")
    print(f"{'stage':<11}{'bare MiB':>9}{'vols':>6}{'peak MiB':>10}{'vs bare':>9}{'s':>8}{'s/vol':>7}"
          f"{'many/few':>10}")
    for stage in STAGES:
        bare = result["bare_reference"][stage]["peak_rss_mb"]
        ratio = result[stage].get("ratio_many_over_few")
        for label in ("few", "many", "only"):
            if label not in result[stage]:
                continue
            e = result[stage][label]
            shown = f"{ratio:>10.3f}" if ratio is not None and label == "many" else ""
            print(f"{stage:<11}{bare:>9.0f}{e['volumes']:>6}{e['peak_rss_mb']:>10.0f}{e['vs_bare']:>9.2f}"
                  f"{e['seconds']:>8.1f}{e['seconds_per_volume']:>7.1f}{shown}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=DEFAULT_SIZE, help="side of the cubic volumes in voxels")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where the JSON report goes")
    parser.add_argument("--child", nargs=2, metavar=("KIND", "JOB"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, job = args.child
        print(json.dumps(CHILDREN[kind](json.loads(job))))
        return
    if args.size < 32:
        sys.exit(f"bench/volume_memory.py: --size {args.size}: expected at least 32 voxels")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="lesionflow-volume-memory-") as work:
        result = report(measure(args.size, Path(work)), args.size)
    result["total_seconds"] = round(time.perf_counter() - started, 1)
    print_table(result)
    print(f"total {result['total_seconds']:.0f}s")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
