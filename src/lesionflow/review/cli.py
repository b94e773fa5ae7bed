"""The `lesionflow` command: a reviewer's and an author's view of a project (runs, show, verify),
installed as a console script by `make setup`.

Never run by the pipeline; reads results/ and logs/ and, for reproduce, builds in its own folder.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from lesionflow.pipeline.errors import LesionflowError, exit_on_user_error
from lesionflow.pipeline.provenance import package_versions
from lesionflow.review.bundle import export_bundle
from lesionflow.review.gc import human_size, remove, unreferenced
from lesionflow.review.project import load_project, run_names
from lesionflow.review.records import run_job
from lesionflow.review.reproduce import (
    compare_metrics,
    comparison_table,
    evaluation_summary,
    identical_outputs,
    prepare_folder,
    rebuild,
    with_overrides,
)
from lesionflow.review.show import show_key, show_run
from lesionflow.review.status import run_status, status_table, text_table
from lesionflow.review.verify import verify_runs

DESCRIPTION = """\
A project's runs, their provenance and whether their results hold, for the people who review them.
Every command reads the project in --directory (default: here) with --configfile (default: its
config/config.yaml, else the built-in demo's), the same config the pipeline ran with."""


def _project_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--configfile", help="the config the pipeline ran with (default: config/config.yaml)")
    parser.add_argument("--directory", "-d", help="the project's working directory (default: here)")
    parser.add_argument("--snakefile", help="the workflow's Snakefile (default: the installed lesionflow's)")


def build_parser() -> argparse.ArgumentParser:
    """The command line: one subcommand per tool, each with its own --help."""
    parser = argparse.ArgumentParser(prog="lesionflow", description=DESCRIPTION)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    runs = commands.add_parser(
        "runs", help="every run with its keys, status and headline test metrics",
        description="Every run of the config: its keys, its status (done; failed: a job's log "
        "without its record; stale: built from other keys, i.e. other code or settings since; "
        "missing: not built, or in part), jobs built, headline test metrics, and a note when "
        "artifacts were made under library versions other than the installed ones.",
    )  # fmt: skip
    _project_options(runs)
    runs.add_argument("--json", action="store_true", help="print every run's full status as JSON")

    show = commands.add_parser(
        "show", help="a run's settings, differences to the baseline and provenance; or one artifact's",
        description="For a run: its settings that differ from the baseline's and, per artifact, "
        "when, where, by which commit and under which libraries it was made. For a key (or a "
        "unique prefix of at least 4 characters): that artifact's settings, input keys and record.",
    )  # fmt: skip
    _project_options(show)
    show.add_argument("target", metavar="RUN|KEY", help="a run name of the config, or an artifact key")

    verify = commands.add_parser(
        "verify", help="check every artifact of a run's branch against its provenance record",
        description="Recompute the checksum of every file of the runs' artifacts and compare it with "
        "the artifact's provenance record; name every file that changed, went missing or was "
        "added, every artifact without a record, made by other code than the installed one, or "
        "under other library versions. Exit status 0 when everything matches, 1 otherwise.",
    )  # fmt: skip
    _project_options(verify)
    verify.add_argument("runs", nargs="*", metavar="RUN", help="the runs to verify (default: all)")

    reproduce = commands.add_parser(
        "reproduce", help="rebuild a run's branch from nothing elsewhere and compare every metric",
        description="Rebuild one run's branch from nothing in a folder of its own (the same config and "
        "data, a fresh results/), up to its evaluation; then print every metric beside the "
        "original's: metric, original, reproduced, difference, tolerance, verdict. Tolerances come "
        "from the config's reproducibility.tolerances (default: 0.02 absolute + 0.02 relative). "
        "Exit status 0 when every metric is within its tolerance, 1 otherwise.",
    )  # fmt: skip
    _project_options(reproduce)
    reproduce.add_argument("run", metavar="RUN", help="the run to reproduce")
    reproduce.add_argument("--out", help="the reproduction's folder (default: reproduce/RUN in the project)")
    reproduce.add_argument("--cores", type=int, default=os.cpu_count(), help="cores for Snakemake")
    reproduce.add_argument(
        "--tolerance", action="append", default=[], metavar="METRIC=ABSOLUTE",
        help="override one metric's tolerance (absolute, relative 0), e.g. dice_pos=0; repeatable",
    )  # fmt: skip

    export = commands.add_parser(
        "export", help="write one run as a self-contained bundle: model, settings, metrics, predict.py",
        description="Write one segmentation run as a bundle a lab can use without the pipeline: the "
        "model (state dict and TorchScript), its preprocessing, TTA and locked post-processing, "
        "its metrics with intervals, every artifact's provenance record, and a predict.py that "
        "writes the run's locked masks of new images or volumes in their own format.",
    )  # fmt: skip
    _project_options(export)
    export.add_argument("run", metavar="RUN", help="the run to export")
    export.add_argument("out", metavar="OUT", help="the bundle's folder (new, or empty)")

    gc = commands.add_parser(
        "gc", help="list (and with --yes delete) artifacts no run of the given configs references",
        description="List every keyed artifact (with its logs), plan and run view in the project that no "
        "run of the given configs references, and the space they hold; with --yes, delete them. "
        "Give every config whose results you keep (--configfile, repeatable). Do not run it while "
        "Snakemake runs in the project.",
    )  # fmt: skip
    gc.add_argument("--configfile", action="append", help="a config whose runs are kept; repeatable")
    gc.add_argument("--directory", "-d", help="the project's working directory (default: here)")
    gc.add_argument("--snakefile", help="the workflow's Snakefile (default: the installed lesionflow's)")
    gc.add_argument("--yes", action="store_true", help="delete what is listed")
    return parser


def command_runs(args: argparse.Namespace) -> int:
    """`lesionflow runs`."""
    project = load_project(args.configfile, args.directory, args.snakefile)
    installed = package_versions()
    rows = [run_status(project, name, installed) for name in project.plan.runs]
    if args.json:
        print(json.dumps([asdict(row) for row in rows], indent=2))
    else:
        print(f"{len(rows)} runs of {project.configfile} in {project.workdir}")
        print(status_table(rows))
    return 0


def command_show(args: argparse.Namespace) -> int:
    """`lesionflow show`."""
    project = load_project(args.configfile, args.directory, args.snakefile)
    if args.target in project.plan.runs:
        print(show_run(project, args.target, package_versions()))
    else:
        print(show_key(project, args.target))
    return 0


def command_verify(args: argparse.Namespace) -> int:
    """`lesionflow verify`: exit 1 when anything does not match its record."""
    project = load_project(args.configfile, args.directory, args.snakefile)
    names = run_names(project, args.runs)
    result = verify_runs(project, names, package_versions())
    for finding in result.findings:
        print(finding.line())
    checked = f"{result.jobs} artifacts ({result.files} files) of {len(names)} run(s)"
    if result.findings:
        print(f"lesionflow verify: {len(result.findings)} problem(s) in {checked}", file=sys.stderr)
        return 1
    print(f"lesionflow verify: all {checked} match their provenance records")
    return 0


def command_reproduce(args: argparse.Namespace) -> int:
    """`lesionflow reproduce`: exit 1 when a metric lies outside its tolerance."""
    project = load_project(args.configfile, args.directory, args.snakefile)
    name = run_names(project, [args.run])[0]
    tolerances = with_overrides(project.config.reproducibility["tolerances"], args.tolerance)
    target = evaluation_summary(project, name)
    original = project.path(target)
    if not original.is_file():
        raise LesionflowError(
            f"run {name} has no {target} under the installed code and this config (see `lesionflow "
            "runs`): build it with snakemake first"
        )
    out = Path(args.out).resolve() if args.out else project.path(Path("reproduce") / name)
    prepare_folder(project, out)
    print(f"lesionflow reproduce: rebuilding {name} from nothing in {out}", flush=True)
    rebuild(project, out, target, args.cores)
    reproduced = json.loads((out / target).read_text())
    rows = compare_metrics(json.loads(original.read_text()), reproduced, tolerances)
    print(f"\nbyte-identical outputs (original {project.workdir}, reproduced {out}):")
    print(text_table(identical_outputs(project, out, name)))
    print(f"\nmetrics of {name} ({target}):")
    print(comparison_table(rows))
    outside = [row.metric for row in rows if not row.holds]
    if outside:
        print(f"lesionflow reproduce: {len(outside)} metric(s) outside their tolerance: {', '.join(outside)}",
              file=sys.stderr)  # fmt: skip
        return 1
    print(f"lesionflow reproduce: all {len(rows)} metrics of {name} within their tolerances")
    return 0


def command_export(args: argparse.Namespace) -> int:
    """`lesionflow export`."""
    project = load_project(args.configfile, args.directory, args.snakefile)
    name = run_names(project, [args.run])[0]
    keys = project.plan.runs[name]
    folders = {stage: project.path(folder) for stage, folder in project.plan.run_folders(name).items()}
    settings = {stage: run_job(project.plan, stage, key).settings for stage, key in keys.items()}
    out = export_bundle(folders, name, args.out, settings)
    print(f"lesionflow export: run {name} written to {out}; predict with: python {out}/predict.py --help")
    return 0


def command_gc(args: argparse.Namespace) -> int:
    """`lesionflow gc`."""
    projects = [load_project(path, args.directory, args.snakefile) for path in (args.configfile or [None])]
    workdir = projects[0].workdir
    items = unreferenced(workdir, projects)
    for item in items:
        print(f"{item.kind:<9} {human_size(item.size):>9}  {item.path.relative_to(workdir).as_posix()}")
    total = human_size(sum(item.size for item in items))
    configs = ", ".join(str(project.configfile) for project in projects)
    if not items:
        print(f"lesionflow gc: nothing in {workdir} is unreferenced by {configs}")
    elif args.yes:
        print(f"lesionflow gc: deleted {len(items)} items, {human_size(remove(items))} freed")
    else:
        print(f"lesionflow gc: {len(items)} items ({total}) unreferenced by {configs}; --yes deletes them")
    return 0


COMMANDS = {
    "export": command_export,
    "gc": command_gc,
    "runs": command_runs,
    "show": command_show,
    "verify": command_verify,
    "reproduce": command_reproduce,
}


@exit_on_user_error
def main(argv: Sequence[str] | None = None) -> int:
    """Run one `lesionflow` command; its exit status."""
    args = build_parser().parse_args(argv)
    return COMMANDS[args.command](args)


def console_main() -> None:
    """The console script's entry point."""
    sys.exit(main())
