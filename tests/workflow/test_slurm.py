"""profiles/slurm: every job goes through SLURM with the resources the config asks for.

The dry-run test needs no SLURM daemons. The others submit to the one-node cluster that
tests/slurm/local-slurm.sh starts (`make test` starts it where it can: root, Linux, apt-get, one
fake GPU) and skip elsewhere; where CI=true they fail instead, so that CI never passes without them.
They never submit to any other cluster: the local one is recognised by its ClusterName.

Against that cluster the profile is used as a user would (`--profile profiles/slurm`, with the
workflow profile profiles/default applied by Snakemake), with LESIONFLOW_SLURM_* in the
environment, plus only what a cluster without accounting and with seconds-long jobs needs:
LOCAL_CLUSTER_OVERRIDES.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from codebase import REPO_CODE

from lesionflow.pipeline.config import resolve_config
from lesionflow.pipeline.plan import build_plan

from .pipeline import REPO_ROOT, SNAKEMAKE, snakemake, tiny_config, tiny_run, write_config

pytestmark = pytest.mark.slow

LOCAL_CLUSTER_NAME = "lesionflow-local"  # tests/slurm/local-slurm.sh sets it
# No slurmdbd here, so sacct cannot answer and the plugin's default status command would wait
# forever; squeue sees finished jobs for MinJobAge (600 s) >= 3 x the first-check delay. Checks
# every 2 s instead of 40 / 30 s, because these jobs last seconds.
LOCAL_CLUSTER_OVERRIDES = [
    "--slurm-status-command", "squeue",
    "--slurm-init-seconds-before-status-checks", "2",
    "--seconds-between-status-checks", "2",
]  # fmt: skip
# Wall-clock limit of one Snakemake run on the local cluster; on expiry it gets SIGINT, which
# makes it scancel its jobs (SIGTERM would leave them queued).
RUN_TIMEOUT_S = 420
SUBMITTED = re.compile(r"submitted with SLURM jobid (\d+) \(log: (\S+)\)")


def epoch_line(epoch: int | str, epochs: int) -> re.Pattern:
    """The line train.py logs per finished epoch (after progress-bar redraws on the same line)."""
    return re.compile(rf"\bepoch {epoch}/{epochs} train_loss")


def snakemake_command(workdir: Path, *args: str) -> list[str]:
    """The profile as documented in profiles/slurm/config.yaml, on ``workdir``'s config."""
    return [
        str(SNAKEMAKE),
        "--snakefile", str(REPO_ROOT / "Snakefile"),
        "--directory", str(workdir),
        "--configfile", str(workdir / "config.yaml"),
        "--profile", str(REPO_ROOT / "profiles" / "slurm"),
        *args,
    ]  # fmt: skip


def slurm_env(**variables: str | None) -> dict[str, str]:
    """This environment with the LESIONFLOW_SLURM_* variables set to ``variables`` (None: unset)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LESIONFLOW_SLURM_")}
    env.update({k: v for k, v in variables.items() if v is not None})
    env["PYTHONUNBUFFERED"] = "1"
    return env


# ---------------------------------------------------------------- dry run: no daemons needed


def dry_run_resources(text: str) -> list[tuple[str, dict[str, str]]]:
    """(rule, resources) of every job a dry run lists."""
    jobs = []
    for block in re.split(r"\n(?=\s*(?:local)?rule \w+:)", text):
        rule = re.match(r"\s*(?:local)?rule (\w+):", block)
        if not rule:
            continue
        line = re.search(r"^\s*resources: (.*)$", block, flags=re.MULTILINE)
        pairs = [item.split("=", 1) for item in line.group(1).split(", ")] if line else []
        jobs.append((rule.group(1), {name: value for name, value in pairs}))
    return jobs


PROFILE = yaml.safe_load((REPO_ROOT / "profiles" / "slurm" / "config.yaml").read_text())
PROFILE_GROUPS = dict(item.split("=") for item in PROFILE["groups"])


def test_profile_groups_the_cheap_stages_after_inference_and_shortens_only_their_runtime():
    rules = {
        match.group(1)
        for smk in (REPO_ROOT / "workflow" / "rules").glob("*.smk")
        for match in re.finditer(r"^rule (\w+):", smk.read_text(), re.MULTILINE)
    }
    assert set(PROFILE_GROUPS) <= rules
    # Stages that need a GPU, a lot of memory or a long time, and those shared by runs (which
    # would join them into one group, where one run's failed inference holds back the others),
    # stay jobs of their own.
    assert not set(PROFILE_GROUPS) & {"data", "split", "preprocess", "fold", "train", "infer",
                                      "infer_scores", "import_predictions", "ensemble",
                                      "training_report"}
    assert set(PROFILE_GROUPS.values()) == {"evaluation", "leaderboard"}
    assert {PROFILE_GROUPS["compare"], PROFILE_GROUPS["compare_report"]} == {"leaderboard"}
    shortened = {item.split(":")[0] for item in PROFILE["set-resources"] if ":runtime=" in item}
    assert shortened == set(PROFILE_GROUPS)
    # One stage at a time inside a submitted job (a locally scoped resource): a group runs its
    # stages one after another on one CPU, and never limits how many jobs run.
    assert PROFILE["resources"] == ["stage_slots=1"]
    assert PROFILE["set-resource-scopes"] == ["stage_slots=local"]


def test_dry_run_asks_for_gpus_on_train_and_infer_only_and_reads_the_partition_from_env(tmp_path):
    config = tiny_config(
        # Resources are not part of the keys: run two trains differently to get its own jobs.
        {"one": tiny_run(), "two": tiny_run(train={"epochs": 2}, resources={"threads": 2})},
        defaults={"resources": {"gpu": 1}},
    )
    write_config(tmp_path, config)
    env = slurm_env(LESIONFLOW_SLURM_PARTITION="from-env", LESIONFLOW_SLURM_ACCOUNT=None)
    # A dry run caps threads at --cores, 1 unless given (a SLURM run has no such cap).
    result = subprocess.run(
        snakemake_command(tmp_path, "--dry-run", "--cores", "2"),
        cwd=tmp_path, capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    text = result.stdout + result.stderr
    assert result.returncode == 0, text
    jobs = dry_run_resources(text)
    rules = {rule for rule, _ in jobs}
    assert {"data", "split", "train", "infer", "tune", "evaluate", "analyse"} <= rules, text
    for rule, resources in jobs:
        if rule == "all":  # the target rule runs in the Snakemake process itself
            continue
        if rule in ("train", "infer"):
            assert resources.get("gpu") == "1", (rule, resources)
            assert resources["mem_mb"] == "4000" and resources["runtime"] == "120", (rule, resources)
        else:
            assert "gpu" not in resources, (rule, resources)
            # The stages the profile groups into one job per run take 15 minutes each.
            runtime = "15" if rule in PROFILE_GROUPS else "60"
            assert resources["mem_mb"] == "4000" and resources["runtime"] == runtime, (rule, resources)
        # Expanded from the environment; unset gives an empty value (the plugin then leaves -A
        # out), never the literal name of the variable.
        assert resources["slurm_partition"] == "from-env", (rule, resources)
        assert resources["slurm_account"] == "", (rule, resources)
    # cpus_per_task follows each job's threads: 2 for run two's training, 1 for one-thread rules.
    cpus = {(rule, r["cpus_per_task"]) for rule, r in jobs if rule in ("train", "data", "split")}
    assert cpus == {("train", "1"), ("train", "2"), ("data", "1"), ("split", "1")}, cpus


# ---------------------------------------------------------------- the local SLURM cluster


def local_cluster_problem() -> str | None:
    """Why the local test cluster cannot be used here, or None."""
    for tool in ("sbatch", "squeue", "sinfo", "scontrol", "scancel"):
        if shutil.which(tool) is None:
            return f"SLURM's {tool} is not installed"
    try:
        sinfo = subprocess.run(["sinfo", "-h", "-o", "%P %a"], capture_output=True, text=True, timeout=30)
        config = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        return "sinfo / scontrol did not answer within 30 s"
    if sinfo.returncode != 0:
        return f"sinfo fails: {sinfo.stderr.strip() or sinfo.stdout.strip()}"
    name = re.search(r"^ClusterName\s*=\s*(\S+)", config.stdout, flags=re.MULTILINE)
    if not name or name.group(1) != LOCAL_CLUSTER_NAME:
        return (
            f"the SLURM cluster here is {name.group(1) if name else 'unknown'}, not the local test "
            f"cluster {LOCAL_CLUSTER_NAME}: the tests submit nowhere else"
        )
    return None


@pytest.fixture(scope="module")
def local_slurm() -> dict[str, str]:
    """The local cluster's partitions: {"default": name, "other": a non-default one or the default}."""
    problem = local_cluster_problem()
    if problem:
        message = f"{problem} (start it with `sudo tests/slurm/local-slurm.sh start`, or `make test` as root)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true and the local SLURM cluster is unusable: {message}")
        pytest.skip(message)
    listed = subprocess.run(["sinfo", "-h", "-o", "%P"], capture_output=True, text=True, check=True)
    names = listed.stdout.split()
    default = next(n.rstrip("*") for n in names if n.endswith("*"))
    others = [n for n in names if not n.endswith("*")]
    return {"default": default, "other": others[-1] if others else default}


def gpus_on_node() -> int:
    node = subprocess.run(["scontrol", "show", "node"], capture_output=True, text=True, check=True)
    found = re.search(r"Gres=gpu:(?:\w+:)?(\d+)", node.stdout)
    return int(found.group(1)) if found else 0


class SlurmRun:
    """A Snakemake run on the local cluster: its exit code and output, and the SLURM jobs it submitted."""

    def __init__(self, returncode: int, output: str):
        self.returncode = returncode
        self.output = output
        # rule -> SLURM job ids in submission order, from "Job N has been submitted with SLURM
        # jobid X (log: .../rule_<rule>/<wildcards>/X.log)".
        self.jobs: dict[str, list[str]] = {}
        self.logs: dict[str, Path] = {}
        for job_id, log in SUBMITTED.findall(output):
            rule = re.search(r"/rule_(\w+?)/", log).group(1)
            self.jobs.setdefault(rule, []).append(job_id)
            self.logs[job_id] = Path(log)


def run_on_slurm(workdir: Path, env: dict[str, str], *targets: str, while_running=None) -> SlurmRun:
    """Snakemake with the SLURM profile; ``while_running(output_so_far)`` is called every 0.2 s.

    Stopped like `timeout -s INT`: SIGINT after RUN_TIMEOUT_S, so that it cancels its jobs.
    """
    command = snakemake_command(workdir, *LOCAL_CLUSTER_OVERRIDES, *targets)
    output_file = workdir / "snakemake-output.txt"
    with open(output_file, "w") as output:
        process = subprocess.Popen(command, cwd=workdir, stdout=output, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + RUN_TIMEOUT_S
        timed_out = True
        try:
            while time.monotonic() < deadline:
                if process.poll() is not None:
                    timed_out = False
                    break
                if while_running is not None:
                    while_running(output_file.read_text())
                time.sleep(0.2)
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGINT)
                try:
                    process.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
    text = output_file.read_text()
    assert not timed_out, f"Snakemake did not finish within {RUN_TIMEOUT_S} s:\n{text}"
    return SlurmRun(process.returncode, text)


def queue_rows(job_ids: list[str]) -> dict[str, dict[str, str]]:
    """squeue's view of finished and running jobs (kept for MinJobAge), by job id."""
    fields = ["id", "name", "comment", "partition", "account", "state"]
    listed = subprocess.run(
        ["squeue", "--states=all", "--noheader", "--jobs", ",".join(job_ids),
         "--format", "%i|%j|%k|%P|%a|%T"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    rows = [dict(zip(fields, line.split("|"), strict=True)) for line in listed.stdout.splitlines()]
    return {row["id"]: row for row in rows}


def job_details(job_id: str) -> str:
    """`scontrol show job`: what SLURM allocated (NumCPUs, TresPerJob, ...)."""
    shown = subprocess.run(["scontrol", "show", "job", job_id], capture_output=True, text=True, check=True)
    return shown.stdout


@pytest.mark.slurm
def test_slurm_runs_every_job_as_a_slurm_job_and_train_with_the_gpu_it_asks_for(local_slurm, tmp_path):
    if gpus_on_node() < 1:
        pytest.fail("the local cluster advertises no GPU: start it with SLURM_LOCAL_FAKE_GPUS=1")
    config = tiny_config({"gpu_run": tiny_run(resources={"gpu": 1, "threads": 2})})
    write_config(tmp_path, config)
    keys = build_plan(resolve_config(config), tmp_path, REPO_CODE).runs["gpu_run"]
    env = slurm_env(
        LESIONFLOW_SLURM_PARTITION=local_slurm["other"], LESIONFLOW_SLURM_ACCOUNT="lesionflow-test"
    )
    # data -> split -> preprocess -> train: three CPU jobs and the GPU job, each its own SLURM job. (Inference
    # asks for the same GPU; its two jobs would queue one after the other on the one fake GPU.)
    run = run_on_slurm(tmp_path, env, f"results/train/{keys['train']}/train_summary.json")
    assert run.returncode == 0, run.output
    assert sorted(run.jobs) == ["data", "preprocess", "split", "train"], run.output
    assert all(len(ids) == 1 for ids in run.jobs.values()), run.jobs

    ids = [ids[0] for ids in run.jobs.values()]
    rows = queue_rows(ids)
    assert sorted(rows) == sorted(ids), (rows, run.output)
    run_id = re.search(r"SLURM run ID: (\S+)", run.output).group(1)
    for rule, (job_id,) in run.jobs.items():
        row = rows[job_id]
        assert row["state"] == "COMPLETED", row
        assert row["name"] == run_id, row
        assert row["comment"].startswith(f"rule_{rule}_wildcards_"), row
        # The environment reached sbatch: -p and -A.
        assert row["partition"] == local_slurm["other"] and row["account"] == "lesionflow-test", row
        assert run.logs[job_id].is_file() and run.logs[job_id].parent.parent.name == f"rule_{rule}"

    details = {rule: job_details(job_id) for rule, (job_id,) in run.jobs.items()}
    # sbatch --gpus=1 shows as TresPerJob=gres:gpu:1; the CPU rules ask for no GRES at all.
    assert re.search(r"TresPerJob=\S*gpu:1\b", details["train"]), details["train"]
    assert "TresPerJob" not in details["data"] and "TresPerJob" not in details["split"], details
    # The run's threads reach SLURM (--cpus-per-task), not capped by any --cores.
    cpus = {rule: re.search(r"NumCPUs=(\d+)", text).group(1) for rule, text in details.items()}
    assert cpus == {"data": "1", "split": "1", "preprocess": "1", "train": "2"}, cpus

    summary = json.loads((tmp_path / f"results/train/{keys['train']}/train_summary.json").read_text())
    assert summary["device"] == "cpu"  # the GPU is fake: training found no CUDA and fell back
    assert (tmp_path / f"logs/train/{keys['train']}.log").is_file()


@pytest.mark.slurm
def test_training_signalled_by_slurm_is_retried_and_resumes_from_its_checkpoint(local_slurm, tmp_path):
    epochs = 24
    # Epochs of about half a second (bigger and more images, small batches), so that attempt 1
    # is still training when it is signalled after epoch 2.
    config = tiny_config({"long": tiny_run(train={"epochs": epochs, "batch_size": 2})})
    config["data"]["synthetic"].update(n_images=72, image_size=128)
    write_config(tmp_path, config)
    keys = build_plan(resolve_config(config), tmp_path, REPO_CODE).runs["long"]
    # Data and split locally (profiles/default): only the training matters here.
    snakemake(tmp_path, f"results/split/{keys['split']}/split.csv")
    train_log = tmp_path / f"logs/train/{keys['train']}.log"
    signalled: list[str] = []

    def signal_train_after_epoch_two(output: str) -> None:
        """Preempt attempt 1 as SLURM would (SIGTERM to the job's processes) once it logs epoch 2."""
        if signalled:
            return
        submitted = [job_id for job_id, log in SUBMITTED.findall(output) if "/rule_train/" in log]
        if submitted and train_log.exists() and epoch_line(2, epochs).search(train_log.read_text()):
            subprocess.run(["scancel", "--signal=TERM", submitted[0]], check=True)
            signalled.append(submitted[0])

    # The account is left unset: sbatch goes without -A.
    env = slurm_env(LESIONFLOW_SLURM_PARTITION=None, LESIONFLOW_SLURM_ACCOUNT=None)
    run = run_on_slurm(
        tmp_path, env, f"results/train/{keys['train']}/train_summary.json",
        while_running=signal_train_after_epoch_two,
    )  # fmt: skip
    assert signalled, f"training was not seen at epoch 2 of {epochs}:\n{run.output}"
    assert run.returncode == 0, run.output
    first, *retries = run.jobs["train"]
    assert first == signalled[0] and len(retries) == 1, run.jobs
    rows = queue_rows(run.jobs["train"])
    assert rows[first]["state"] != "COMPLETED" and rows[retries[0]]["state"] == "COMPLETED", rows
    assert rows[first]["account"] == "(null)", rows  # no account set, none given to sbatch

    # logs/train/<key>.log is attempt 2's: it resumed where attempt 1 stopped.
    log = train_log.read_text()
    resumed = re.search(rf"resuming from checkpoint at epoch (\d+) of {epochs}\b", log)
    assert resumed, f"attempt 2 did not resume:\n{log}"
    epoch = int(resumed.group(1))
    assert 1 <= epoch < epochs, log
    trained = [int(e) for e in epoch_line(r"(\d+)", epochs).findall(log)]
    assert trained == list(range(epoch + 1, epochs + 1)), log
    assert (tmp_path / f"results/train/{keys['train']}/model.pt").is_file()
