"""Which runs have no test results after a Snakemake run, and which of their stages failed.

Must never guess from a run's name or settings: a stage failed when its log exists and its outputs
do not; a stage without either never started.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from pathlib import Path

from lesionflow.pipeline.plan import Plan
from lesionflow.pipeline.stages import STAGES

# The values a rule's wildcards other than {key} take (infer and infer_scores run once per subset).
WILDCARD_VALUES = {"subset": ("val", "test")}
# Where the leaderboards of a run with failed jobs go (never where the compare rule writes).
PARTIAL_FOLDER = "results/compare/partial"
# The stage whose summary puts a run into its task's leaderboard.
EVALUATED_BY = ("evaluate", "evaluate_scores")


def expand_pattern(pattern: str, key: str) -> list[str]:
    """Every path a rule's output or log ``pattern`` names for the job with content key ``key``."""
    paths = [pattern.replace("{key}", key)]
    for wildcard in set(re.findall(r"\{(\w+)\}", pattern)) - {"key"}:
        values = WILDCARD_VALUES.get(wildcard)
        if values is None:
            raise ValueError(f"no values known for the wildcard {{{wildcard}}} of {pattern}")
        paths = [path.replace(f"{{{wildcard}}}", value) for path in paths for value in values]
    return paths


def ancestors(stage: str) -> list[str]:
    """``stage`` and every stage it reads, directly or not, in registry order."""
    found = {stage}
    for name in reversed(list(STAGES)):
        if name in found:
            found.update(STAGES[name].reads)
    return [name for name in STAGES if name in found]


def _complete(patterns: Iterable[str], key: str, workdir: Path) -> bool:
    return all((workdir / path).exists() for pattern in patterns for path in expand_pattern(pattern, key))


def run_failure(
    keys: Mapping[str, str],
    outputs: Mapping[str, Iterable[str]],
    logs: Mapping[str, Iterable[str]],
    workdir: Path,
) -> dict[str, str] | None:
    """Why a run (its key per stage) has no test summary: {stage, log, reason}; None when it has one.

    ``outputs`` and ``logs`` hold each stage's rule output and log patterns (with ``{key}``).
    """
    final = next(stage for stage in EVALUATED_BY if stage in keys)
    if _complete(outputs[final], keys[final], workdir):
        return None
    for stage in ancestors(final):
        if stage not in keys or _complete(outputs[stage], keys[stage], workdir):
            continue
        written = [
            path
            for pattern in logs.get(stage, ())
            for path in expand_pattern(pattern, keys[stage])
            if (workdir / path).is_file()
        ]
        if written:
            return {"stage": stage, "log": ", ".join(written),
                    "reason": f"stage {stage} failed; its log: {', '.join(written)}"}  # fmt: skip
        return {
            "stage": stage,
            "log": "",
            "reason": f"stage {stage} never started: an earlier job failed and Snakemake stopped "
            "(run with --keep-going to finish the other runs)",
        }
    return None


def run_failures(
    plan: Plan,
    outputs: Mapping[str, Iterable[str]],
    logs: Mapping[str, Iterable[str]],
    workdir: str | Path,
) -> dict[str, dict[str, str]]:
    """Every run of ``plan`` without a test summary, by name: the stage that failed and its log."""
    failures = {}
    for name, keys in plan.runs.items():
        failure = run_failure(keys, outputs, logs, Path(workdir))
        if failure is not None:
            failures[name] = failure
    return failures
