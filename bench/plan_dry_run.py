"""Benchmark: wall time of `snakemake --dry-run` of lesionflow with many runs, against a bare Snakefile.

It must never write into the repository (only temporary folders, and the JSON report if --out is given).

What is compared, each on a fresh working directory, repeated and reported as medians:

- lesionflow: the repository's Snakefile on a generated config of N runs (built-in synthetic data;
  runs differ in learning rate, network kwargs, seed, preprocessing, TTA and tune grid, and pairs
  of runs share their training, as in real configs);
- bare reference, in the same run: a generated plain Snakefile (no lesionflow import) whose DAG is
  a copy of lesionflow's (read once from ``snakemake --dag``): the same rules, the same number of
  jobs of each, the same edges, each job a ``touch`` with wildcards and an input function; the job
  counts both dry runs print must match (asserted);
- no-op dry runs of both Snakefiles, in a folder where every job's outputs already exist (empty
  files made from a full dry run's job list; the profile's rerun triggers have no mtime, so
  nothing is stale): what every rerun of a finished project pays; both must print "Nothing to be
  done" (asserted);
- startup reference: a 2-job plain Snakefile, i.e. what any dry run costs before planning
  (imports, plugins, profiles); the ratio above startup is the one that says what lesionflow's
  planning costs;
- lesionflow's own plan in a fresh interpreter: import, ``resolve_config`` and ``shared_plan`` as
  the Snakefile calls them, and the code fingerprints alone, as a share of the dry run.

Where a SLURM client is installed but no controller answers (as on a development VM), every
Snakemake start waits about 9 s in the SLURM executor plugin's ``scontrol show config``: it is in
all three kinds alike and shows as startup; --stub-scontrol takes it out of all of them.

    .venv/bin/python bench/plan_dry_run.py [--runs 20 50] [--repeats 3] [--stub-scontrol]
        [--out bench/out/plan_dry_run.json]
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import children
import yaml

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = Path(sys.executable).parent / "snakemake"
# lesionflow's Snakefile picks this profile up by itself; the plain Snakefiles get it explicitly,
# so that every dry run plans under the same settings (cores, rerun triggers).
WORKFLOW_PROFILE = REPO / "profiles" / "default"
# Keep the job-stats table (the job counts) but not one block per job: printing is not planning.
QUIET = ("--quiet", "rules", "host", "reason")
LEARNING_RATES = (0.01, 0.003, 0.001, 0.0003, 0.0001)
NETWORK_KWARGS = (
    {"channels": [8, 16], "strides": [2]},
    {"channels": [16, 32], "strides": [2]},
    {"channels": [8, 16, 32], "strides": [2, 2]},
)
STARTUP_SNAKEFILE = (
    'rule all:\n    input: "a.done"\n\nrule a:\n    output: "a.done"\n    shell: "touch {output}"\n'
)


# ---------------------------------------------------------------- configs and Snakefiles


def run_override(index: int) -> dict[str, Any]:
    """Run ``index`` of the generated config: runs 2k and 2k+1 share their training."""
    group = index // 2
    run: dict[str, Any] = {
        "model": {"network": "UNet", "kwargs": NETWORK_KWARGS[(group // len(LEARNING_RATES)) % 3]},
        "train": {
            "epochs": 1,
            "learning_rate": LEARNING_RATES[group % len(LEARNING_RATES)],
            "seed": group // 15,
        },
        "resources": {"threads": 1},
    }
    if group % 7 == 6:  # now and then another preprocessing, hence another preprocess job
        run["preprocess"] = {"normalise": "image"}
    if index % 2:
        run["infer"] = {"tta": ["identity", "hflip", "vflip"]}
    if index % 3 == 0:
        run["tune"] = {"thresholds": [0.3, 0.5, 0.7], "min_lesion_areas": [0, 4]}
    return run


def lesionflow_config(n_runs: int) -> dict[str, Any]:
    """A config of ``n_runs`` runs on the built-in synthetic data (small)."""
    return {
        "data": {"source": "synthetic", "synthetic": {"n_images": 36, "image_size": 64, "seed": 3}},
        "split": {"train": 0.5, "val": 0.25, "test": 0.25, "seed": 0},
        "runs": {f"run{i:03d}": run_override(i) for i in range(n_runs)},
        "compare": {"baseline": "run000"},
    }


def dag_of(text: str) -> tuple[dict[int, str], dict[int, list[int]]]:
    """The rule of every job and the jobs each job reads, from ``snakemake --dag`` output."""
    rules = {int(node): rule for node, rule in re.findall(r'^\s*(\d+)\[label = "(\w+)', text, re.M)}
    upstream: dict[int, list[int]] = {node: [] for node in rules}
    for source, target in re.findall(r"^\s*(\d+) -> (\d+)", text, re.M):
        upstream[int(target)].append(int(source))
    return rules, upstream


def bare_snakefile(rules: dict[int, str], upstream: dict[int, list[int]]) -> str:
    """A plain Snakefile with lesionflow's DAG: one rule per lesionflow rule, one job per node."""
    (root,) = [node for node, rule in rules.items() if rule == "all"]
    lines = [
        f"RULE = {rules!r}",
        f"UPSTREAM = {upstream!r}",
        "",
        "def done(job):",
        '    return f"results/{RULE[job]}/{job}.done"',
        "",
        "def inputs(wildcards):",
        "    return [done(up) for up in UPSTREAM[int(wildcards.job)]]",
        "",
        "wildcard_constraints:",
        '    job=r"\\d+"',
        "",
        "rule all:",
        f"    input: [done(up) for up in UPSTREAM[{root}]]",
        "    default_target: True",
    ]
    for rule in sorted(set(rules.values()) - {"all"}):
        lines += [
            "",
            f"rule {rule}:",
            "    input: inputs",
            f'    output: "results/{rule}/{{job}}.done"',
            '    shell: "touch {output}"',
        ]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- dry runs


def environment(work: Path, stub_scontrol: bool) -> dict[str, str]:
    """The environment of every dry run: ours, or with a ``scontrol`` that fails at once first on PATH.

    The SLURM executor plugin runs ``scontrol show config`` when Snakemake imports it (every run,
    whatever the executor); with a SLURM client but no reachable controller that waits about 9 s.
    """
    if not stub_scontrol:
        return dict(os.environ)
    stub = work / "stub" / "scontrol"
    stub.parent.mkdir()
    stub.write_text("#!/bin/sh\nexit 1\n")
    stub.chmod(0o755)
    return {**os.environ, "PATH": os.pathsep.join([str(stub.parent), os.environ.get("PATH", "")])}


def snakemake(snakefile: Path, workdir: Path, env: dict[str, str], *args: str) -> tuple[float, str]:
    """Run Snakemake on ``snakefile`` in ``workdir``; return its wall time and its output."""
    command = [str(SNAKEMAKE), "--snakefile", str(snakefile), "--directory", str(workdir), *args]
    if snakefile.parent != REPO:
        command += ["--workflow-profile", str(WORKFLOW_PROFILE)]
    start = time.perf_counter()
    done = subprocess.run(command, cwd=workdir, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"plan_dry_run.py: snakemake failed on {snakefile}:\n{(done.stdout + done.stderr)[-3000:]}")
    return seconds, done.stdout + done.stderr


def job_counts(text: str) -> Counter:
    """Jobs per rule from the first job-stats table a dry run prints (with ``total``)."""
    table = text.split("Job stats:", 1)[1].split("\n\n", 1)[0]
    return Counter({rule: int(n) for rule, n in re.findall(r"^(\w+)\s+(\d+)\s*$", table, re.M)})


def dry_run(
    snakefile: Path, workdir: Path, env: dict[str, str], config: Path | None
) -> tuple[float, Counter]:
    """One timed dry run of ``snakefile`` in the fresh folder ``workdir``, with its job counts."""
    workdir.mkdir(parents=True)
    extra = ["--configfile", str(config)] if config else []
    seconds, text = snakemake(snakefile, workdir, env, *extra, "--dry-run", *QUIET)
    return seconds, job_counts(text)


def outputs_of(text: str) -> list[str]:
    """Every output file of the jobs a (not quiet) dry run lists."""
    lines = re.findall(r"^\s+output: (.+)$", text, re.M)
    return [path.strip() for line in lines for path in line.split(",")]


def done_folder(snakefile: Path, workdir: Path, env: dict[str, str], config: Path | None) -> Path:
    """A fresh ``workdir`` holding every job's outputs as empty files: a dry run there has nothing to do."""
    workdir.mkdir(parents=True)
    extra = ["--configfile", str(config)] if config else []
    _, text = snakemake(snakefile, workdir, env, *extra, "--dry-run")
    for name in outputs_of(text):
        (workdir / name).parent.mkdir(parents=True, exist_ok=True)
        (workdir / name).touch()
    return workdir


def noop_dry_run(snakefile: Path, workdir: Path, env: dict[str, str], config: Path | None) -> float:
    """Seconds of a dry run in ``workdir``, whose outputs all exist; it must find nothing to do."""
    extra = ["--configfile", str(config)] if config else []
    seconds, text = snakemake(snakefile, workdir, env, *extra, "--dry-run", *QUIET)
    if "Nothing to be done" not in text:
        sys.exit(f"plan_dry_run.py: the no-op dry run of {snakefile} found work:\n{text[-3000:]}")
    return seconds


# ---------------------------------------------------------------- children (one measurement each)


def plan_child(job: dict[str, Any]) -> dict[str, Any]:
    """In a fresh interpreter: lesionflow's import, resolve_config and shared_plan, as the Snakefile."""
    start = time.perf_counter()
    # Imported here, not at the top, to time the import the Snakefile pays.
    config_module = importlib.import_module("lesionflow.pipeline.config")
    plan_module = importlib.import_module("lesionflow.pipeline.plan")
    code_base = importlib.import_module("lesionflow.pipeline.fingerprints").CodeBase
    imported = time.perf_counter()
    config = config_module.resolve_config(yaml.safe_load(Path(job["config"]).read_text()))
    resolved = time.perf_counter()
    plan = plan_module.shared_plan(config, Path(job["workdir"]), {}, code_base.installed(REPO))
    planned = time.perf_counter()
    return {
        "import_s": imported - start,
        "resolve_config_s": resolved - imported,
        "shared_plan_s": planned - resolved,
        "jobs": sum(len(jobs) for jobs in plan.jobs.values()),
    }


def fingerprints_child(job: dict[str, Any]) -> dict[str, Any]:
    """In a fresh interpreter: the code fingerprints of every stage alone (part of shared_plan)."""
    code_base = importlib.import_module("lesionflow.pipeline.fingerprints").CodeBase
    start = time.perf_counter()
    code_base.installed(REPO).fingerprints()
    return {"fingerprints_s": time.perf_counter() - start}


CHILDREN = {"plan": plan_child, "fingerprints": fingerprints_child}


def child(kind: str, job: dict[str, Any]) -> dict[str, Any]:
    """Run child ``kind`` on ``job`` in a fresh interpreter: lesionflow's caches start empty."""
    return children.run_child(__file__, kind, job)


# ---------------------------------------------------------------- measurement and report


def measure(n_runs: int, repeats: int, work: Path, stub_scontrol: bool) -> dict[str, Any]:
    """Every measurement for a config of ``n_runs`` runs, ``repeats`` times each, interleaved."""
    env = environment(work, stub_scontrol)
    config = work / "config.yaml"
    config.write_text(yaml.safe_dump(lesionflow_config(n_runs), sort_keys=False))
    (work / "dag").mkdir()
    _, dag_text = snakemake(REPO / "Snakefile", work / "dag", env, "--configfile", str(config), "--dag")
    bare, startup = work / "bare" / "Snakefile", work / "startup" / "Snakefile"
    for path, text in ((bare, bare_snakefile(*dag_of(dag_text))), (startup, STARTUP_SNAKEFILE)):
        path.parent.mkdir()
        path.write_text(text)
    done = {
        "bare": done_folder(bare, work / "done-bare", env, None),
        "lesionflow": done_folder(REPO / "Snakefile", work / "done-lesionflow", env, config),
    }
    times: dict[str, list[float]] = {
        "startup": [], "bare": [], "lesionflow": [], "noop_bare": [], "noop_lesionflow": [],
    }
    plans: list[dict[str, Any]] = []
    counts: dict[str, Counter] = {}
    for rep in range(repeats):
        for name, snakefile, configfile in (
            ("startup", startup, None),
            ("bare", bare, None),
            ("lesionflow", REPO / "Snakefile", config),
        ):
            seconds, counts[name] = dry_run(snakefile, work / f"{name}-{rep}", env, configfile)
            times[name].append(seconds)
        for name, snakefile, configfile in (("bare", bare, None), ("lesionflow", REPO / "Snakefile", config)):
            times[f"noop_{name}"].append(noop_dry_run(snakefile, done[name], env, configfile))
        plan_dir = work / f"plan-{rep}"
        plan_dir.mkdir()
        plan_job = {"config": str(config), "workdir": str(plan_dir)}
        plans.append({**child("plan", plan_job), **child("fingerprints", {})})
    if counts["bare"] != counts["lesionflow"]:
        sys.exit(
            f"plan_dry_run.py: job counts differ: bare {dict(counts['bare'])}, "
            f"lesionflow {dict(counts['lesionflow'])}"
        )
    return {"n_runs": n_runs, "times": times, "plans": plans, "jobs": dict(counts["lesionflow"])}


def ratio(numerator: float, denominator: float) -> float | None:
    """``numerator / denominator``, or None (undefined) when the denominator is not positive."""
    return numerator / denominator if denominator > 0 else None


def shown(value: float | None, spec: str) -> str:
    """``value`` formatted by ``spec``, or n/a when it is undefined."""
    return "n/a" if value is None else format(value, spec)


def summary(measured: dict[str, Any]) -> dict[str, Any]:
    """Medians, job counts and ratios of one ``measure`` result."""
    median = {name: statistics.median(values) for name, values in measured["times"].items()}
    plan = {key: statistics.median(p[key] for p in measured["plans"]) for key in measured["plans"][0]}
    in_process = plan["import_s"] + plan["resolve_config_s"] + plan["shared_plan_s"]
    above = {name: median[name] - median["startup"] for name in ("bare", "lesionflow")}
    return {
        "n_runs": measured["n_runs"],
        "jobs_total": measured["jobs"]["total"],
        "jobs_by_rule": measured["jobs"],
        "plan_jobs_distinct": plan["jobs"],
        "seconds": measured["times"],
        "median_s": median,
        "ratio_lesionflow_over_bare": ratio(median["lesionflow"], median["bare"]),
        "ratio_noop_lesionflow_over_bare": ratio(median["noop_lesionflow"], median["noop_bare"]),
        "above_startup_s": above,
        "ratio_above_startup": ratio(above["lesionflow"], above["bare"]),
        "plan_in_process_median_s": {key: v for key, v in plan.items() if key != "jobs"},
        "plan_share_of_lesionflow_dry_run": ratio(in_process, median["lesionflow"]),
        "plan_share_of_lesionflow_above_startup": ratio(in_process, above["lesionflow"]),
        "plan_share_of_excess_over_bare": ratio(in_process, median["lesionflow"] - median["bare"]),
    }


def print_summary(result: dict[str, Any]) -> None:
    """The numbers of one ``summary``, as lines."""
    median, above, plan = result["median_s"], result["above_startup_s"], result["plan_in_process_median_s"]
    print(
        f"\n{result['n_runs']} runs: {result['jobs_total']} jobs in both dry runs "
        f"({result['plan_jobs_distinct']} keyed jobs in lesionflow's plan)"
    )
    print(f"startup (2-job plain Snakefile) : {median['startup']:7.2f} s (reference)")
    print(f"bare Snakefile, same DAG        : {median['bare']:7.2f} s  above startup {above['bare']:6.2f} s")
    print(
        f"lesionflow Snakefile            : {median['lesionflow']:7.2f} s  "
        f"above startup {above['lesionflow']:6.2f} s"
    )
    print(
        f"ratio lesionflow / bare         : {shown(result['ratio_lesionflow_over_bare'], '7.2f')} "
        f"(above startup: {shown(result['ratio_above_startup'], '.2f')})"
    )
    print(
        f"no-op dry run (all outputs exist): bare {median['noop_bare']:.2f} s, lesionflow "
        f"{median['noop_lesionflow']:.2f} s, ratio {shown(result['ratio_noop_lesionflow_over_bare'], '.2f')}"
    )
    print(
        f"lesionflow plan in-process      : import {plan['import_s']:.2f} s, resolve_config "
        f"{plan['resolve_config_s']:.2f} s, shared_plan {plan['shared_plan_s']:.2f} s "
        f"(code fingerprints alone {plan['fingerprints_s']:.2f} s)"
    )
    print(
        f"plan share of the dry run       : {shown(result['plan_share_of_lesionflow_dry_run'], '7.1%')} "
        f"(of the time above startup {shown(result['plan_share_of_lesionflow_above_startup'], '.1%')}, "
        f"of the excess over bare {shown(result['plan_share_of_excess_over_bare'], '.1%')})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, nargs="+", default=[50], help="runs in the config; several: each")
    parser.add_argument("--repeats", type=int, default=3, help="dry runs of each kind per run count")
    parser.add_argument("--out", type=Path, help="also write the report as JSON here")
    parser.add_argument(
        "--stub-scontrol",
        action="store_true",
        help="put a scontrol that fails at once first on PATH (a SLURM client without controller waits 9 s)",
    )
    parser.add_argument("--child", nargs=2, metavar=("KIND", "JOB"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, job = args.child
        print(json.dumps(CHILDREN[kind](json.loads(job))))
        return
    results = []
    for n_runs in args.runs:
        with tempfile.TemporaryDirectory(prefix="lesionflow-plan-") as work:
            results.append(summary(measure(n_runs, args.repeats, Path(work), args.stub_scontrol)))
        print_summary(results[-1])
    if args.out:
        report = {
            "snakemake": subprocess.check_output([str(SNAKEMAKE), "--version"], text=True).strip(),
            "cpus": os.cpu_count(),
            "repeats": args.repeats,
            "stub_scontrol": args.stub_scontrol,
            "results": results,
        }
        args.out.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
