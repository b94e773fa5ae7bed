"""The benchmark suite: every bench/ script in turn, one table of ratios against bare references.

It never imports torch or lesionflow (each benchmark runs in its own interpreter, so no peak or
timing hides in another) and never writes into the repository except bench/out/.

Benchmarks and the figures they give (lesionflow value, bare value measured in the same run, ratio):

- planning (plan_dry_run.py): full and no-op ``snakemake --dry-run`` at 3, 22 and 50 runs vs. a
  bare Snakefile with the same job graph; goal ratio <= 2. The suite stubs ``scontrol`` by default
  (--no-stub-scontrol keeps it): where a SLURM client is installed without a controller, every
  Snakemake start waits ~9 s in the SLURM plugin, on both sides alike, which only hides planning;
- fingerprinting (keys.py): the dataset fingerprint, cold and cached, vs. plain blake2b;
- metrics (metrics.py): per-image metrics + lesion matching vs. MONAI's metric classes;
- throughput (throughput.py): training images/s vs. a bare MONAI loop (goal >= 0.95), inference
  images/s of the infer stage vs. the bare forward pass (goal >= 0.5), TTA with k transforms vs.
  k forward passes;
- memory (memory.py on the IDRiD photographs in ../shared/data/idrid-ex, skipped with a note when
  they are absent; volume_memory.py on generated volumes): each stage's peak RSS vs. imports + one
  image.

The table goes to stdout and bench/out/bench.csv; each benchmark's JSON and log to bench/out/.

    .venv/bin/python bench/run.py [--quick] [--cores 2]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from children import write_csv

BENCH = Path(__file__).resolve().parent
OUT = BENCH / "out"
IDRID = BENCH.parents[1] / "shared" / "data" / "idrid-ex"
COLUMNS = ["benchmark", "figure", "lesionflow", "bare", "ratio", "unit", "goal", "meets", "note"]
PLAN_RUNS = (3, 22, 50)
# Sizes: full (< 15 min on 2 busy cores) and --quick (a ~3 min smoke run).
SIZES = {
    "full": {"plan_repeats": 3, "keys_images": 400, "metrics_images": 500, "train_images": 160,
             "repeats": 3, "idrid": True, "volume_size": 96},
    "quick": {"plan_repeats": 1, "keys_images": 60, "metrics_images": 100, "train_images": 48,
              "repeats": 3, "idrid": False, "volume_size": 48},
}


# ---------------------------------------------------------------- running the benchmarks


def run_script(name: str, script: str, args: list[str], env: dict[str, str]) -> dict[str, Any] | None:
    """Run ``bench/<script> args --out bench/out/<name>.json``; its JSON, or None if it failed."""
    out, log = OUT / f"{name}.json", OUT / f"{name}.log"
    out.unlink(missing_ok=True)
    start = time.perf_counter()
    with open(log, "w") as handle:
        done = subprocess.run([sys.executable, str(BENCH / script), *args, "--out", str(out)],
                              stdout=handle, stderr=subprocess.STDOUT, env=env, cwd=BENCH.parent)
    seconds = time.perf_counter() - start
    status = "ok" if done.returncode == 0 and out.is_file() else f"FAILED (exit {done.returncode}, see {log})"
    print(f"  {name:<14}{seconds:7.1f} s  {status}", file=sys.stderr, flush=True)
    return json.loads(out.read_text()) if status == "ok" else None


def row(benchmark: str, figure: str, ours: float | None, bare: float | None, unit: str,
        goal: str = "", note: str = "") -> dict[str, str]:
    """One table row; the ratio is ours / bare, and ``goal`` (``<= x`` or ``>= x``) is checked."""
    ratio = ours / bare if ours is not None and bare else None
    meets = ""
    if goal and ratio is not None:
        bound = float(goal.split()[1])
        meets = "yes" if (ratio <= bound if goal.startswith("<=") else ratio >= bound) else "NO"
    return {"benchmark": benchmark, "figure": figure, "lesionflow": shown(ours), "bare": shown(bare),
            "ratio": shown(ratio), "unit": unit, "goal": goal, "meets": meets, "note": note}


def shown(value: float | None) -> str:
    """``value`` to 3 significant digits, or n/a."""
    return "n/a" if value is None else f"{value:.3g}"


def failed(benchmark: str, name: str) -> list[dict[str, str]]:
    """The one row of a benchmark that failed."""
    return [row(benchmark, "failed", None, None, "", note=f"see bench/out/{name}.log")]


# ---------------------------------------------------------------- rows of each benchmark


def planning_rows(result: dict[str, Any] | None) -> list[dict[str, str]]:
    """Full and no-op dry-run seconds at each run count, lesionflow vs. the bare Snakefile."""
    if result is None:
        return failed("planning", "plan_dry_run")
    rows = []
    for entry in result["results"]:
        median, n, jobs = entry["median_s"], entry["n_runs"], entry["jobs_total"]
        rows.append(row("planning", f"full dry run, {n} runs ({jobs} jobs)", median["lesionflow"],
                        median["bare"], "s", "<= 2", f"startup alone {median['startup']:.2f} s"))
        rows.append(row("planning", f"no-op dry run, {n} runs", median["noop_lesionflow"],
                        median["noop_bare"], "s", "<= 2"))
    return rows


def keys_rows(result: dict[str, Any] | None) -> list[dict[str, str]]:
    """Cold and cached dataset fingerprint vs. blake2b over the same bytes."""
    if result is None:
        return failed("fingerprint", "keys")
    what = f"{result['files']} files, {result['megabytes']} MB"
    bare = 1000 * result["bare_blake2b_s"]
    return [
        row("fingerprint", f"cold fingerprint vs blake2b ({what})", 1000 * result["cold_s"], bare, "ms"),
        row("fingerprint", "cached fingerprint vs blake2b", 1000 * result["warm_s"], bare, "ms"),
    ]


def metrics_rows(result: dict[str, Any] | None) -> list[dict[str, str]]:
    """Per-image metrics + lesion matching vs. MONAI's metric classes."""
    if result is None:
        return failed("metrics", "metrics")
    return [row("metrics", f"per-image metrics vs MONAI ({result['images']} images {result['size']}px)",
                result["lesionflow_ms_per_image"], result["monai_ms_per_image"], "ms/image",
                note=f"bootstrap summary {result['bootstrap_summary_s']:.1f} s (no bare reference)")]


def throughput_rows(result: dict[str, Any] | None) -> list[dict[str, str]]:
    """Training and inference images/s, and TTA with k transforms vs. k forward passes."""
    if result is None:
        return failed("throughput", "throughput")
    train, infer = result["training"], result["inference"]
    rates = train["images_per_s"]
    rows = [
        row("training", f"images/s vs bare MONAI loop ({train['train_images']} images)", rates["lesionflow"],
            rates["bare_monai"], "images/s", ">= 0.95", "train_epoch vs same net/loss/optim/augment"),
        row("training", "images/s vs bare steps alone (no loader)", rates["lesionflow"],
            rates["bare_steps_only"], "images/s", note="what loader + augmentation cost"),
    ]
    rates = infer["images_per_s"]
    figure = f"run_infer images/s vs bare forward, batch 8 ({infer['test_images']} images)"
    rows.append(row("inference", figure, rates["lesionflow"], rates["bare_forward"], "images/s", ">= 0.5",
                    "run_infer reads, predicts, restores and writes"))
    if "bare_sliding_window" in rates:
        rows.append(row("inference", "run_infer images/s vs sliding_window_inference", rates["lesionflow"],
                        rates["bare_sliding_window"], "images/s", ">= 0.5"))
    else:
        rows.append(row("inference", "run_infer vs sliding_window_inference", None, None, "images/s",
                        note=infer["sliding_window"]))
    for k, entry in result["tta"]["by_k"].items():
        rows.append(row("TTA", f"predict_batch, {k} transforms vs {k} forwards (batch 8)",
                        1000 * entry["predict_batch_s"], 1000 * entry["k_forwards_s"], "ms"))
    return rows


def memory_rows(result: dict[str, Any] | None, skipped: str) -> list[dict[str, str]]:
    """Peak RSS of preprocess and infer on IDRiD photographs, few and many, vs. imports + one image."""
    if skipped:
        return [row("memory (photos)", "preprocess and infer peaks", None, None, "MiB", note=skipped)]
    if result is None:
        return failed("memory (photos)", "memory")
    bare = result["bare_reference"]["peak_rss_mb"]
    return [
        row("memory (photos)", f"{stage} peak, {result[stage][size]['images']} images vs imports + 1 image",
            result[stage][size]["peak_rss_mb"], bare, "MiB")
        for stage in ("preprocess", "infer") for size in ("few", "many")
    ]


def volume_memory_rows(result: dict[str, Any] | None) -> list[dict[str, str]]:
    """Peak RSS of each stage on generated volumes vs. its imports + one volume."""
    if result is None:
        return failed("memory (volumes)", "volume_memory")
    side = result["volume_shape"][0]
    rows = []
    for stage in ("data", "preprocess", "infer", "tune", "evaluate"):
        bare = result["bare_reference"][stage]["peak_rss_mb"]
        for label in ("few", "many", "only"):
            if label in result[stage]:
                entry = result[stage][label]
                rows.append(row("memory (volumes)", f"{stage} peak, {entry['volumes']} volumes {side}^3 vs "
                                "imports + 1 volume", entry["peak_rss_mb"], bare, "MiB"))
    return rows


# ---------------------------------------------------------------- suite


def run_suite(size: dict[str, Any], cores: int, stub_scontrol: bool) -> list[dict[str, str]]:
    """Run every benchmark at ``size``; the table's rows."""
    env = {**os.environ, "OMP_NUM_THREADS": str(cores), "MKL_NUM_THREADS": str(cores)}
    plan_args = ["--runs", *map(str, PLAN_RUNS), "--repeats", str(size["plan_repeats"])]
    rows = planning_rows(run_script("plan_dry_run", "plan_dry_run.py",
                                    plan_args + (["--stub-scontrol"] if stub_scontrol else []), env))
    rows += keys_rows(run_script("keys", "keys.py", ["--images", str(size["keys_images"])], env))
    rows += metrics_rows(run_script("metrics", "metrics.py", ["--images", str(size["metrics_images"])], env))
    throughput_args = ["--images", str(size["train_images"]), "--repeats", str(size["repeats"])]
    rows += throughput_rows(run_script("throughput", "throughput.py",
                                       [*throughput_args, "--threads", str(cores)], env))
    skipped = ""
    if not size["idrid"]:
        skipped = "skipped by --quick"
    elif not (IDRID / "manifest.csv").is_file():
        skipped = f"skipped: no IDRiD photographs at {IDRID} (manifest.csv)"
    memory = None if skipped else run_script("memory", "memory.py", ["--data", str(IDRID)], env)
    if skipped:
        print(f"  {'memory':<14}{skipped}", file=sys.stderr)
    rows += memory_rows(memory, skipped)
    rows += volume_memory_rows(run_script("volume_memory", "volume_memory.py",
                                          ["--size", str(size["volume_size"])], env))
    return rows


def print_table(rows: list[dict[str, str]]) -> None:
    """The rows as an aligned text table (the note last, unaligned)."""
    columns = COLUMNS[:-1]
    widths = {c: max(len(c), *(len(r[c]) for r in rows)) for c in columns}
    print("  ".join(c.ljust(widths[c]) for c in columns) + "  note")
    for r in rows:
        print("  ".join(r[c].ljust(widths[c]) for c in columns) + "  " + r["note"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, no IDRiD memory run (~3 min)")
    parser.add_argument("--cores", type=int, default=2, help="torch / BLAS threads of every benchmark")
    parser.add_argument("--no-stub-scontrol", action="store_true",
                        help="keep the SLURM plugin's scontrol call in every dry run (see the docstring)")
    args = parser.parse_args()
    OUT.mkdir(exist_ok=True)
    stub = not args.no_stub_scontrol
    print(f"lesionflow benchmarks ({'quick' if args.quick else 'full'}, {args.cores} cores; dry runs "
          f"{'with scontrol stubbed' if stub else 'with the real scontrol'}):", file=sys.stderr)
    started = time.perf_counter()
    rows = run_suite(SIZES["quick" if args.quick else "full"], args.cores, stub)
    print_table(rows)
    path = write_csv(OUT / "bench.csv", rows, COLUMNS)
    print(f"\nwall time {time.perf_counter() - started:.0f} s; wrote {path} and bench/out/*.json")


if __name__ == "__main__":
    main()
