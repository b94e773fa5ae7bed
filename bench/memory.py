"""Benchmark: peak memory (RSS) of the preprocess and infer stages on real IDRiD fundus photographs.

The claim checked: both stages read, process and write one source image at a time, so their peak
memory is bounded by one image plus one batch of windows and does not grow with the number of
images. Each measurement runs in a fresh Python process, so one peak cannot hide in another:

- bare reference, in the same run: a process that imports ``lesionflow.data.preprocess`` (the same
  imports as the stages) and loads ONE 4288 x 2848 photograph as float32 with its mask, i.e.
  "imports + one image", the least any stage reading these images can need;
- preprocess (crop the field of view, resize to 1024, normalise, 256-pixel tiles) of 2 images
  and of all 20: the ratio peak(20) / peak(2) should stay near 1, and each near the reference;
- infer (untrained MONAI UNet, TTA identity + hflip, batch 8, CPU) of a subset of 2 images and
  of one of 12, on the same preprocess output: again the ratio should stay near 1.

Peaks are ``ru_maxrss`` of each process (as the stages themselves report them). The parent
process imports nothing heavy: on Linux a child's ``ru_maxrss`` starts from its parent's
high-water mark (fork copies the page tables; exec keeps the old mark), so a parent holding
torch would inflate every child's number. Expect a few tens of MiB of growth over the first
images even so: glibc raises its mmap threshold as large arrays are freed, so later arrays of up
to 32 MiB come from a fragmenting heap (with MALLOC_MMAP_THRESHOLD_=1048576 the peaks stay flat).

    .venv/bin/python bench/memory.py [--data ../shared/data/idrid-ex] [--out bench/out/memory.json]
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import children
from children import peak_mb, save_untrained_model, write_csv

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "idrid-ex"
DEFAULT_OUT = Path(__file__).resolve().parent / "out" / "memory.json"
# IDRiD masks are red on black JPEG: the lesion is in the red channel, cut half-way at 127.
MASK_CHANNEL, MASK_THRESHOLD = 0, 127
PREPROCESS = {
    "crop_field_of_view": True, "max_size": 1024, "normalise": "image", "tile_size": 256, "tile_stride": 256,
}
INFER = {"tta": ["identity", "hflip"], "batch_size": 8, "device": "cpu"}
MODEL_SETTINGS = {"network": "UNet", "spatial_dims": 2}
ROI_SIZE = [256, 256]
# Subset sizes of the infer comparison; the remaining images go to train and are not inferred.
N_VAL, N_TEST = 2, 12
N_FEW = 2


# ---------------------------------------------------------------- children (one measurement each)


def stage_result(record: dict[str, Any]) -> dict[str, Any]:
    """The fields of a stage's own record (preprocess.json, <subset>_infer.json) that we report."""
    return {key: record[key] for key in ("peak_rss_mb", "seconds", "n_images")}


def child_bare(job: dict[str, Any]) -> dict[str, Any]:
    """Imports as the stages make them, then one source image (float32) and its mask."""
    # Imported in the child, not at the top: the parent must stay light (see the module docstring).
    from lesionflow.data import preprocess  # noqa: F401 (imported for its memory, as the stage)
    from lesionflow.data.manifest import load_manifest_mask
    from lesionflow.io.readers import read_image

    imports = peak_mb()
    start = time.perf_counter()
    row = {"mask": job["mask"], "mask_channel": MASK_CHANNEL, "mask_threshold": MASK_THRESHOLD}
    image = read_image(job["image"]).array
    mask = load_manifest_mask(row)
    return {
        "imports_mb": imports,
        "peak_rss_mb": peak_mb(),
        "seconds": time.perf_counter() - start,
        "image_shape": list(image.shape),
        "lesion_pixels": int(mask.sum()),
    }


def child_preprocess(job: dict[str, Any]) -> dict[str, Any]:
    """The preprocess stage on one subset manifest; its record carries its own peak RSS."""
    from lesionflow.data.preprocess import run_preprocess
    from lesionflow.pipeline.config import complete_run_section

    settings = complete_run_section("preprocess", PREPROCESS)
    return stage_result(run_preprocess(job["manifest"], job["split"], settings, job["out"]))


def child_checkpoint(job: dict[str, Any]) -> dict[str, Any]:
    """Save an untrained UNet in the checkpoint format that ``infer.load_model`` reads."""
    return save_untrained_model(job["model"], MODEL_SETTINGS, 3, ROI_SIZE, 0)


def child_infer(job: dict[str, Any]) -> dict[str, Any]:
    """The infer stage on one subset; its summary carries its own peak RSS."""
    from lesionflow.model.infer import run_infer
    from lesionflow.pipeline.config import complete_run_section

    settings = {"infer": complete_run_section("infer", INFER)}
    return stage_result(
        run_infer(job["images"], job["preprocess"], job["model"], settings, job["subset"], job["out"])
    )


CHILDREN = {
    "bare": child_bare, "preprocess": child_preprocess, "checkpoint": child_checkpoint, "infer": child_infer,
}


# ---------------------------------------------------------------- parent


def run_child(kind: str, job: dict[str, Any]) -> dict[str, Any]:
    """Run one measurement of this script in a fresh interpreter."""
    return children.run_child(__file__, kind, job)


def read_rows(data: Path) -> list[dict[str, str]]:
    """The rows of the dataset's manifest, with absolute image and mask paths and mask options."""
    with open(data / "manifest.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    for row in rows:
        row["image"] = str((data / row["image"]).resolve())
        row["mask"] = str((data / row["mask"]).resolve())
        row["mask_channel"], row["mask_threshold"] = str(MASK_CHANNEL), str(MASK_THRESHOLD)
    return rows


def split_rows(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    """val = the first N_VAL images, test = the next N_TEST, train = the rest.

    One split serves every preprocess run (a subset manifest takes its own rows of it), so the
    20-image output doubles as the input of the infer comparison: few (val) against many (test).
    """
    subsets = ["val"] * N_VAL + ["test"] * N_TEST
    return [
        {"image_id": Path(row["image"]).stem, "subject": row["subject"],
         "split": subsets[i] if i < len(subsets) else "train"}
        for i, row in enumerate(rows)
    ]


def measure(data: Path, work: Path) -> dict[str, Any]:
    """Every measurement of the benchmark, each in its own process, as one result dict."""
    rows = read_rows(data)
    if len(rows) < N_VAL + N_TEST:
        sys.exit(f"bench/memory.py: {data} has {len(rows)} images; the infer part needs {N_VAL + N_TEST}")
    split = write_csv(work / "split.csv", split_rows(rows), ["image_id", "subject", "split"])
    columns = ["image", "mask", "subject", "mask_channel", "mask_threshold"]

    bare = run_child("bare", {"image": rows[0]["image"], "mask": rows[0]["mask"]})
    preprocess: dict[int, dict[str, Any]] = {}
    for n in (N_FEW, len(rows)):
        manifest = write_csv(work / f"manifest_{n}.csv", rows[:n], columns)
        job = {"manifest": str(manifest), "split": str(split), "out": str(work / f"preprocess_{n}")}
        preprocess[n] = run_child("preprocess", job)

    model = work / "model.pt"
    run_child("checkpoint", {"model": str(model)})
    prepared = work / f"preprocess_{len(rows)}"
    infer = {
        subset: run_child(
            "infer",
            {"images": str(prepared / "images.csv"), "preprocess": str(prepared / "preprocess.json"),
             "model": str(model), "subset": subset, "out": str(work / f"infer_{subset}")},
        )
        for subset in ("val", "test")
    }
    return {"bare": bare, "preprocess": preprocess, "infer": infer}


def report(measured: dict[str, Any], data: Path) -> dict[str, Any]:
    """The JSON report: peaks, ratios few/many and against the bare reference, seconds per image."""
    bare = measured["bare"]["peak_rss_mb"]

    def entry(result: dict[str, Any]) -> dict[str, Any]:
        return {
            "images": result["n_images"],
            "peak_rss_mb": round(result["peak_rss_mb"], 1),
            "vs_bare": round(result["peak_rss_mb"] / bare, 3),
            "seconds": round(result["seconds"], 2),
            "seconds_per_image": round(result["seconds"] / result["n_images"], 3),
        }

    few, many = (measured["preprocess"][n] for n in sorted(measured["preprocess"]))
    val, test = measured["infer"]["val"], measured["infer"]["test"]
    return {
        "data": str(data),
        "preprocess_settings": PREPROCESS,
        "infer_settings": INFER,
        "model": {**MODEL_SETTINGS, "roi_size": ROI_SIZE, "trained": False},
        "bare_reference": {
            "what": "imports of lesionflow.data.preprocess + one image (float32) and its mask",
            "imports_mb": round(measured["bare"]["imports_mb"], 1),
            "peak_rss_mb": round(bare, 1),
            "image_shape": measured["bare"]["image_shape"],
        },
        "preprocess": {"few": entry(few), "many": entry(many),
                       "ratio_many_over_few": round(many["peak_rss_mb"] / few["peak_rss_mb"], 3)},
        "infer": {"few": entry(val), "many": entry(test),
                  "ratio_many_over_few": round(test["peak_rss_mb"] / val["peak_rss_mb"], 3)},
    }


def print_table(result: dict[str, Any]) -> None:
    """A compact table of every peak, then the two ratios many / few."""
    bare = result["bare_reference"]
    print(f"{'measurement':<26}{'images':>7}{'peak MiB':>10}{'vs bare':>9}{'s/image':>9}")
    print(f"{'imports only':<26}{'-':>7}{bare['imports_mb']:>10.0f}{'':>9}{'':>9}")
    print(f"{'bare: imports + 1 image':<26}{1:>7}{bare['peak_rss_mb']:>10.0f}{1:>9.2f}{'':>9}")
    for stage in ("preprocess", "infer"):
        for size in ("few", "many"):
            e = result[stage][size]
            label = f"{stage} ({size})"
            print(f"{label:<26}{e['images']:>7}{e['peak_rss_mb']:>10.0f}{e['vs_bare']:>9.2f}"
                  f"{e['seconds_per_image']:>9.2f}")
    for stage in ("preprocess", "infer"):
        print(f"{stage} peak many / few: {result[stage]['ratio_many_over_few']:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the idrid-ex folder")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where the JSON report goes")
    parser.add_argument("--child", nargs=2, metavar=("KIND", "JOB"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, job = args.child
        print(json.dumps(CHILDREN[kind](json.loads(job))))
        return
    data = args.data.resolve()
    if not (data / "manifest.csv").is_file():
        sys.exit(f"bench/memory.py: no IDRiD data at {data} (expected manifest.csv); pass --data")
    with tempfile.TemporaryDirectory(prefix="lesionflow-memory-") as work:
        result = report(measure(data, Path(work)), data)
    print_table(result)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
