"""The runs a config expands into: one per seed (seeds), one per fold (split.folds), and the members
of an ensemble by run name.

Must never put a run's name into a key: names are labels, and an expanded run is keyed by its settings.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from lesionflow.pipeline.errors import LesionflowError

# More folds than this is a slip of the keyboard: each fold is one more training of every run (and
# a count near 2**63 would never finish expanding).
MAX_FOLDS = 100


def with_members(
    name: str, run: dict[str, Any], runs: Mapping[str, Mapping[str, Any]], groups: Mapping[str, str]
) -> dict[str, Any]:
    """An ensemble run with its members as run names, each recipe with seeds replaced by its seeds;
    any other run as it is."""
    if run.get("source") != "ensemble":
        return run
    members: list[str] = []
    for member in run["ensemble"]["members"]:
        named = [member] if member in runs else [r for r, group in groups.items() if group == member]
        if not named:
            raise LesionflowError(
                f"config key 'runs.{name}.ensemble.members' names {member!r}, which is neither a run "
                f"nor a recipe with seeds; {possible_members(runs, groups)}"
            )
        for member_run in named:
            if runs[member_run].get("source") == "ensemble" or member_run == name:
                raise LesionflowError(
                    f"config key 'runs.{name}.ensemble.members' names {member_run!r}, an ensemble; "
                    "an ensemble averages model or external runs"
                )
            if runs[member_run]["task"] != "segmentation":
                raise LesionflowError(
                    f"config key 'runs.{name}.ensemble.members' names {member_run!r}, a "
                    f"{runs[member_run]['task']} run; an ensemble averages segmentation maps"
                )
        members += [member_run for member_run in named if member_run not in members]
    if len(members) < 2:
        raise LesionflowError(
            f"config key 'runs.{name}.ensemble.members' must name at least two runs, got {members}"
        )
    return {**run, "ensemble": {**run["ensemble"], "members": members}}


def possible_members(runs: Mapping[str, Mapping[str, Any]], groups: Mapping[str, str]) -> str:
    """What an ensemble could name, said in a few words: the segmentation runs that are no ensemble,
    and the recipes with seeds among them."""
    members = [
        run for run, settings in runs.items()
        if settings.get("source") != "ensemble" and settings["task"] == "segmentation"
    ]  # fmt: skip
    recipes = list(dict.fromkeys(groups[run] for run in members if groups[run] != run))
    if not members:
        return "the config has no model or external segmentation run to average"
    said = f"runs it can name: {', '.join(members)}"
    return f"{said}; recipes with seeds: {', '.join(recipes)}" if recipes else said


def expand_folds(
    runs: Mapping[str, dict[str, Any]], groups: Mapping[str, str], n_folds: int | None
) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """With split.folds, every run replaced by one run per fold (NAME.fold<k>, with ``fold``: k), in
    the group of its recipe; the runs and groups as they are without."""
    if n_folds is None:
        return dict(runs), dict(groups)
    if n_folds > MAX_FOLDS:
        raise LesionflowError(
            f"config key 'split.folds' is {n_folds}; at most {MAX_FOLDS} folds (each trains every run once)"
        )
    expanded, folded_groups = {}, {}
    for name, run in runs.items():
        if run["source"] != "model":
            raise LesionflowError(
                f"config key 'split.folds' makes one run per fold, but run '{name}' has source "
                f"{run['source']}; give a k-fold config model runs only"
            )
        for fold in range(n_folds):
            expanded[f"{name}.fold{fold}"] = {**run, "fold": fold}
            folded_groups[f"{name}.fold{fold}"] = groups[name]
    return expanded, folded_groups


def seeded_name(recipe: str, seed: int) -> str:
    """The name of the run that trains ``recipe`` with ``seed``."""
    return f"{recipe}.seed{seed}"


def expand_seeds(
    runs: Mapping[str, dict[str, Any]], overrides: Mapping[str, Any]
) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """The runs with every run that lists ``seeds`` replaced by one run per seed, in config order,
    and each run's group (its recipe's name). ``overrides`` are the runs as the user wrote them."""
    expanded: dict[str, dict[str, Any]] = {}
    groups: dict[str, str] = {}
    for name, run in runs.items():
        seeds = run.pop("seeds")
        if seeds is None:
            expanded[name], groups[name] = run, name
            continue
        if "seed" in ((overrides.get(name) or {}).get("train") or {}):
            raise LesionflowError(
                f"config keys 'runs.{name}.seeds' and 'runs.{name}.train.seed' are both set; "
                "keep seeds (one training per seed) or train.seed (one training)"
            )
        for seed in seeds:
            seeded = seeded_name(name, seed)
            if seeded in runs:
                raise LesionflowError(
                    f"config key 'runs.{name}.seeds' makes a run named '{seeded}', which is "
                    "already a run; rename one of them"
                )
            expanded[seeded] = {**copy.deepcopy(run), "train": {**run["train"], "seed": seed}}
            groups[seeded] = name
    return expanded, groups
