"""Test-only fault injection: SIGKILL the first job of each lesionflow rule halfway through its writes.

Python imports this module at start-up when its folder is on PYTHONPATH (tests/workflow/test_faults.py
puts it there for the Snakemake it starts). It does nothing unless LESIONFLOW_FAULTS names a folder.
It wraps os.replace, the last step of every atomic write (lesionflow.pipeline.artifacts.atomic_path):
the first time an output of a rule's first job becomes final, the job is killed with SIGKILL, so it
dies with one output in place and the rest (its provenance record at least) never written. A marker
file <rule>.<attempt>.json in the folder records each kill (the job's command line, the file made
final, what its folder held), so the retried job runs to the end; LESIONFLOW_FAULT_TIMES
("train=2") kills that job of a rule more than once, to make a whole invocation fail.

A notebook job is killed from inside its kernel (at the kernel's first finished figure), while
papermill is still executing it: the job and its kernel die together, mid-notebook.
Never imports lesionflow: every Python process of the run, Snakemake's own included, imports this.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

FAULTS = os.environ.get("LESIONFLOW_FAULTS")
_replace = os.replace


def _command_line(pid: int | None = None) -> list[str]:
    # A kernel's job is its parent process; /proc gives its command line as the job was started.
    if pid is None:
        return list(sys.argv)
    raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    return [part.decode() for part in raw.split(b"\0") if part]


def _job(argv: list[str]) -> list[str]:
    # A job's command line from its entry point on (scripts/<stage>.py): /proc shows the interpreter
    # the shebang started before it, sys.argv does not.
    for at, arg in enumerate(argv[:2]):
        if arg.endswith(".py") and Path(arg).parent.name == "scripts":
            return argv[at:]
    return []


def _is_kernel(argv: list[str]) -> bool:
    return any("ipykernel" in arg for arg in argv[:3])


def _rule(argv: list[str]) -> str:
    # One entry point serves all notebook stages: they are told apart by their notebook.
    script = Path(argv[0]).stem
    if script == "notebook" and "--notebook" in argv:
        return f"notebook-{Path(argv[argv.index('--notebook') + 1]).stem}"
    return script


def _files_in(argv: list[str]) -> list[str]:
    # What the job's folder held when it died, temporary files included: what a rerun could find.
    if "--out" not in argv:
        return []
    out = Path(argv[argv.index("--out") + 1])
    return sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())


def _times(rule: str) -> int:
    wanted = dict(
        item.split("=", 1) for item in os.environ.get("LESIONFLOW_FAULT_TIMES", "").split(",") if item
    )
    return int(wanted.get(rule, 1))


def _claimed(rule: str, argv: list[str], final: str, in_kernel: bool) -> bool:
    """Whether this job takes the rule's next kill: the first job of a rule to get here takes it
    (its marker made exclusively, as two jobs of a rule may run at once); its retry or a later
    invocation takes the next, up to the rule's number of kills."""
    for attempt in range(1, _times(rule) + 1):
        marker = Path(FAULTS) / f"{rule}.{attempt}.json"
        if marker.exists():
            if json.loads(marker.read_text() or "{}").get("argv", argv) != argv:
                return False  # another job of the rule was killed: this one runs through
            continue
        try:
            with open(marker, "x") as handle:
                record = {"argv": argv, "final": os.fspath(final), "in_kernel": in_kernel}
                json.dump({**record, "left": _files_in(argv)}, handle)
        except FileExistsError:
            return False
        return True
    return False


def _kill_job(final: str) -> None:
    """Kill this job (or, in a notebook's kernel, the job above it and the kernel) if its turn."""
    in_kernel = _is_kernel(sys.argv)
    job_pid = os.getppid() if in_kernel else os.getpid()
    argv = _job(_command_line(job_pid if in_kernel else None))
    if not argv or not _claimed(_rule(argv), argv, final, in_kernel):
        return
    if in_kernel:
        os.kill(job_pid, signal.SIGKILL)
    os.kill(os.getpid(), signal.SIGKILL)


def _replace_then_maybe_die(src, dst, *args, **kwargs):
    _replace(src, dst, *args, **kwargs)
    _kill_job(dst)


if FAULTS:
    os.replace = _replace_then_maybe_die
