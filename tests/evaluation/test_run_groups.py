"""Seeds of one recipe as a group with its noise floor, and failed runs listed beside ranked ones."""

import json
import math

import numpy as np
import pandas as pd
import pytest
from leaderboards import compare_settings, counted_summary

from lesionflow.evaluation.leaderboard import run_compare
from lesionflow.evaluation.leaderboard_columns import FAILED, RANKED
from lesionflow.evaluation.run_groups import failed_rows, group_summary, with_failed, with_groups


def board(values: dict[str, float | None], status: dict[str, str] | None = None) -> pd.DataFrame:
    status = status or {}
    return pd.DataFrame(
        {
            "run": list(values),
            "status": [status.get(run, RANKED) for run in values],
            "dice_pos": [np.nan if v is None else v for v in values.values()],
        }
    )


GROUPS = {"a.seed0": "a", "a.seed1": "a", "a.seed2": "a", "b.seed0": "b", "b.seed1": "b", "c": "c"}
SEEDS = {"a.seed0": 0, "a.seed1": 1, "a.seed2": 2, "b.seed0": 0, "b.seed1": 1, "c": None}


def test_a_seeded_runs_noise_floor_is_the_sd_of_its_own_seeds():
    values = {"a.seed0": 0.50, "a.seed1": 0.54, "a.seed2": 0.58, "b.seed0": 0.40, "b.seed1": 0.41, "c": 0.3}
    out = with_groups(board(values), {"groups": GROUPS, "seeds": SEEDS}, ["dice_pos"]).set_index("run")
    assert out.loc["a.seed1", "noise_floor_dice_pos"] == pytest.approx(np.std([0.5, 0.54, 0.58], ddof=1))
    assert out.loc["a.seed1", "noise_floor_dice_pos_n"] == 3
    assert out.loc["b.seed0", "noise_floor_dice_pos"] == pytest.approx(np.std([0.40, 0.41], ddof=1))
    assert out.loc["a.seed2", "noise_floor_source"] == "own seeds"
    assert out.loc["a.seed2", "group"] == "a" and out.loc["a.seed2", "seed"] == 2
    assert pd.isna(out.loc["c", "seed"])


def test_a_lone_run_gets_the_sd_pooled_over_the_seeded_groups():
    values = {"a.seed0": 0.50, "a.seed1": 0.54, "a.seed2": 0.58, "b.seed0": 0.40, "b.seed1": 0.41, "c": 0.3}
    out = with_groups(board(values), {"groups": GROUPS, "seeds": SEEDS}, ["dice_pos"]).set_index("run")
    squares = np.sum((np.array([0.5, 0.54, 0.58]) - 0.54) ** 2) + np.sum((np.array([0.4, 0.41]) - 0.405) ** 2)
    assert out.loc["c", "noise_floor_dice_pos"] == pytest.approx(math.sqrt(squares / 3))
    assert out.loc["c", "noise_floor_dice_pos_n"] == 5
    assert out.loc["c", "noise_floor_source"] == "pooled over the seeds of a, b"


def test_without_two_seeds_of_any_recipe_the_floor_is_undefined_not_zero():
    out = with_groups(board({"c": 0.3, "d": 0.4}), {}, ["dice_pos"])
    assert out["noise_floor_dice_pos"].isna().all()
    assert (out["noise_floor_dice_pos_n"] == 0).all()
    assert set(out["noise_floor_source"]) == {"no recipe has two seeds"}
    assert list(out["group"]) == ["c", "d"]


def test_failed_and_undefined_seeds_are_left_out_of_the_floor_and_the_group_mean():
    values = {"a.seed0": 0.50, "a.seed1": 0.60, "a.seed2": None}
    out = with_groups(board(values, {"a.seed2": FAILED}), {"groups": GROUPS, "seeds": SEEDS}, ["dice_pos"])
    assert out["noise_floor_dice_pos"].iloc[0] == pytest.approx(np.std([0.5, 0.6], ddof=1))
    summary = group_summary(out, ["dice_pos"]).set_index("group")
    assert summary.loc["a", "n_runs"] == 3 and summary.loc["a", "n_ranked"] == 2
    assert summary.loc["a", "dice_pos_mean"] == pytest.approx(0.55)
    assert summary.loc["a", "dice_pos_n"] == 2


def test_lone_runs_have_no_group_summary_row():
    values = {"c": 0.3, "a.seed0": 0.5, "a.seed1": 0.7}
    out = with_groups(board(values), {"groups": GROUPS, "seeds": SEEDS}, ["dice_pos"])
    assert list(group_summary(out, ["dice_pos"])["group"]) == ["a"]


def test_an_external_runs_predictions_say_whether_they_were_masks_only():
    imports = {"ext": {"kind": "masks"}, "prob": {"kind": "probabilities"}}
    out = with_groups(board({"ext": 0.3, "prob": 0.4, "own": 0.5}), {"imports": imports}, ["dice_pos"])
    assert list(out["predictions"]) == [
        "external (masks only: thresholds not tunable)", "external (probabilities)", "model"
    ]  # fmt: skip


def test_a_failed_run_row_names_its_stage_and_log_and_has_no_numbers():
    failures = {"broken": {"stage": "train", "log": "logs/train/abc.log", "reason": "stage train failed"}}
    out = with_failed(board({"ok": 0.5}), failed_rows(failures, {"broken": ["ablation"]}))
    row = out.set_index("run").loc["broken"]
    assert row["status"] == FAILED and row["failed_stage"] == "train" and row["log"] == "logs/train/abc.log"
    assert row["tags"] == "ablation" and math.isnan(row["dice_pos"])


def test_run_compare_ranks_the_finished_runs_and_lists_the_failed_one(tmp_path):
    paths = {}
    for run, dice in (("a.seed0", 0.5), ("a.seed1", 0.6), ("b", 0.4)):
        paths[run] = tmp_path / f"{run}.json"
        paths[run].write_text(json.dumps(counted_summary(dice)))
    settings = {**compare_settings(), "groups": {"a.seed0": "a", "a.seed1": "a"}, "seeds": {"a.seed1": 1}}
    failures = {"c": {"stage": "infer", "log": "logs/infer/k_val.log", "reason": "stage infer failed"}}
    df = run_compare(paths, "b", tmp_path / "out", None, settings, failures)
    written = pd.read_csv(tmp_path / "out" / "leaderboard.csv").set_index("run")
    assert list(df["run"]) == ["a.seed1", "a.seed0", "b", "c"]
    assert written.loc["c", "status"] == FAILED and written.loc["c", "failed_stage"] == "infer"
    assert written.loc["a.seed0", "rank_dice_pos"] == 2 and pd.isna(written.loc["c", "rank_dice_pos"])
    groups = pd.read_csv(tmp_path / "out" / "leaderboard_groups.csv")
    assert groups["dice_pos_mean"].tolist() == pytest.approx([0.55])
    assert (tmp_path / "out" / "leaderboard.png").is_file()


def test_run_compare_with_every_run_failed_still_writes_their_rows(tmp_path):
    failures = {"c": {"stage": "train", "log": "logs/train/k.log", "reason": "stage train failed"}}
    df = run_compare({}, "", tmp_path, None, compare_settings(), failures)
    assert list(df["run"]) == ["c"] and list(df["status"]) == [FAILED]
    assert pd.read_csv(tmp_path / "leaderboard.csv")["failed_stage"].tolist() == ["train"]
