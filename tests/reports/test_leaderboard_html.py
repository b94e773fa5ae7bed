"""Tests of lesionflow.reports.leaderboard_html and run_settings_table: the differing settings, and the
sortable HTML leaderboard (rows, group summaries, undefined values, escaping, failed runs, sorting)."""

import json
import math
import shutil
import subprocess
from html.parser import HTMLParser

import numpy as np
import pandas as pd
import pytest
from leaderboards import board_with_intervals

from lesionflow.evaluation.run_groups import group_summary
from lesionflow.pipeline.errors import LesionflowError
from lesionflow.reports.leaderboard_html import (
    UNDEFINED,
    leaderboard_html,
    leaderboard_page,
    write_leaderboard_html,
)
from lesionflow.reports.run_settings_table import differing_settings, flat_settings

METRICS = ("dice_pos", "presence_roc_auc")
EVIL = "<script>alert('x')</script>"


class BoardParser(HTMLParser):
    """The headers and the rows (class, cells as (attributes, text)) of the HTML's tables."""

    def __init__(self):
        super().__init__()
        self.headers, self.rows, self.script, self._cell, self._in_script = [], [], "", None, False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag in ("th", "td"):
            self._cell = [attrs, ""]
            (self.headers if tag == "th" else self.rows[-1]["cells"]).append(self._cell)
        elif tag == "tr" and self.headers:
            self.rows.append({"class": attrs.get("class", ""), "cells": []})
        self._in_script = self._in_script or tag == "script"

    def handle_endtag(self, tag):
        self._cell = None if tag in ("th", "td") else self._cell
        self._in_script = self._in_script and tag != "script"

    def handle_data(self, data):
        if self._in_script:
            self.script += data
        elif self._cell is not None:
            self._cell[1] += data


def parsed(text: str) -> BoardParser:
    parser = BoardParser()
    parser.feed(text)
    return parser


def cell(parser: BoardParser, row: dict, header: str) -> tuple[dict, str]:
    """(attributes, text) of ``row``'s cell under the header whose text is ``header``."""
    index = [text for _, text in parser.headers].index(header)
    return tuple(row["cells"][index])


def run_rows(parser: BoardParser) -> dict[str, dict]:
    return {r["cells"][0][0]["data-text"]: r for r in parser.rows if "summary" not in r["class"]}


def seed_table() -> pd.DataFrame:
    """Six runs: recipe 'unet' with three seeds (one without a presence AUC), 'segresnet' with two
    (one failed at train), and a lone 'nnunet' run; the baseline is unet.seed0."""
    runs = ["unet.seed0", "unet.seed1", "unet.seed2", "segresnet.seed0", "segresnet.seed1", "nnunet"]
    dice = [0.60, 0.64, 0.59, 0.70, np.nan, 0.66]
    return pd.DataFrame(
        {
            "run": runs,
            "status": ["ranked"] * 4 + ["failed", "ranked"],
            "status_reason": [""] * 4 + ["the train stage failed", ""],
            "is_baseline": [True] + [False] * 5,
            "tags": ["", "", "", "ablation", "", ""],
            "group": ["unet"] * 3 + ["segresnet"] * 2 + ["nnunet"],
            "seed": [0, 1, 2, 0, 1, np.nan],
            "dice_pos": dice,
            "dice_pos_ci_low": [d - 0.04 for d in dice],
            "dice_pos_ci_high": [d + 0.04 for d in dice],
            "dice_pos_n": [40, 40, 40, 40, np.nan, 40],
            "presence_roc_auc": [0.81, np.nan, 0.85, 0.90, np.nan, 0.88],
            "delta_dice_pos_vs_baseline": [d - 0.60 for d in dice],
            "noise_floor_dice_pos": [0.026] * 3 + [np.nan] * 2 + [np.nan],
            "noise_floor_dice_pos_n": [3, 3, 3, 1, 1, 1],
            "mean_rank": [3.0, 2.0, 4.0, 1.0, np.nan, 2.5],
            "failed_stage": ["", "", "", "", "train", ""],
            "log": ["", "", "", "", "logs/segresnet.seed1/train.log", ""],
        }
    )


def seed_settings() -> pd.DataFrame:
    runs = {
        f"{net}.seed{seed}": {"model": {"network": net}, "train": {"seed": seed}}
        for net in ("unet", "segresnet")
        for seed in range(3)
    }
    return differing_settings(runs)


# --- differing settings ----------------------------------------------------------------------


def as_table(settings: dict) -> pd.DataFrame:
    return pd.DataFrame.from_dict(settings, orient="index", dtype=object)


def test_flat_settings_dots_nested_keys_and_writes_lists_as_compact_json():
    run = {"task": "segmentation", "model": {"kwargs": {"channels": [8, 16], "norm": None}, "extra": {}}}
    flat = flat_settings({**run, "tune": {"rules": [{"b": 1, "a": 2}]}})
    assert flat == {
        "task": "segmentation",
        "model.kwargs.channels": "[8,16]",
        "model.kwargs.norm": "null",
        "tune.rules": '[{"a":2,"b":1}]',
    }


def test_differing_settings_holds_exactly_the_keys_that_differ_in_section_order():
    base = {
        "task": "segmentation",
        "tags": ["dev"],
        "model": {"network": "UNet", "kwargs": {"channels": [8, 16], "strides": [2]}},
        "train": {"learning_rate": 0.001, "epochs": 5, "device": "cuda", "num_workers": 2},
        "infer": {"tta": ["identity"], "batch_size": 4, "device": "cpu"},
        "resources": {"gpu": 1, "threads": 4},
    }
    runs = {
        "a": base,
        "b": {
            **base,
            "tags": [],
            "model": {"network": "UNet", "kwargs": {"channels": [8, 32], "strides": [2]}},
        },
        "c": {
            **base,
            "model": {"network": "SegResNet", "kwargs": {}},
            "train": {**base["train"], "epochs": 5.0, "learning_rate": 1, "device": "cpu", "num_workers": 8},
            "infer": {"tta": ["identity", "flip0"], "batch_size": 1, "device": "cuda"},
            "resources": {"gpu": 0, "threads": 1},
        },
    }
    table = as_table(differing_settings(runs))
    assert list(table.index) == ["a", "b", "c"]
    # model before train before infer (the config's section order); epochs 5 and 5.0 are one value.
    assert list(table.columns) == [
        "model.kwargs.channels",
        "model.kwargs.strides",
        "model.network",
        "train.learning_rate",
        "infer.tta",
    ]
    assert table["model.kwargs.channels"].tolist() == ["[8,16]", "[8,32]", None]
    assert table["model.kwargs.strides"].tolist() == ["[2]", "[2]", None]
    assert table.loc["c", "infer.tta"] == '["identity","flip0"]'
    assert as_table(differing_settings(runs, ignore=("model.*", "train.*", "infer.*"))).columns.tolist() == [
        "tags",
        "resources.gpu",
        "resources.threads",
    ]


def test_differing_settings_compares_numbers_by_value_but_not_booleans_as_numbers():
    run = {"model": {"network": "UNet", "flag": True}, "train": {"learning_rate": float("nan"), "epochs": 5}}
    same = {
        "model": {"network": "UNet", "flag": True},
        "train": {"learning_rate": float("nan"), "epochs": 5.0},
    }
    assert differing_settings({"a": run, "b": same}) == {"a": {}, "b": {}}
    assert as_table(differing_settings(
        {"a": run, "b": {**same, "model": {"network": "UNet", "flag": 1}}}
    )).columns.tolist() == ["model.flag"]


# --- the HTML board --------------------------------------------------------------------------


def test_board_has_one_row_per_run_and_one_summary_per_group_of_two_or_more():
    table = seed_table()
    parser = parsed(leaderboard_html(table, seed_settings(), METRICS, "seeds"))
    summaries = [r for r in parser.rows if "summary" in r["class"]]
    assert sorted(run_rows(parser)) == sorted(table["run"]) and len(parser.rows) == len(table) + 2
    labels = [cell(parser, r, "run")[1] for r in summaries]
    assert labels == [
        "summary of group unet: mean ± sd of 3 runs",
        "summary of group segresnet: mean ± sd of 2 runs",
    ]
    unet = table[table["group"] == "unet"]
    for metric in METRICS:
        attrs, text = cell(parser, summaries[0], metric)
        values = unet[metric].dropna()
        assert text == f"{values.mean():.3f} ± {np.std(values, ddof=1):.3f}"
        assert float(attrs["data-num"]) == pytest.approx(np.nanmean(unet[metric]))
    # One defined dice among segresnet's two runs: a mean, and no sd.
    assert cell(parser, summaries[1], "dice_pos")[1] == f"0.700 ± {UNDEFINED}"
    assert "over 1 of the group's 2 runs" in cell(parser, summaries[1], "dice_pos")[0]["title"]
    # The settings the group shares are shown on its summary row, those that differ are not.
    assert cell(parser, summaries[0], "model.network")[1] == "unet"
    assert cell(parser, summaries[0], "train.seed")[1] == ""


def test_group_summary_matches_pandas_mean_and_sample_sd_of_the_ranked_runs():
    table = seed_table()
    # A smoke run of the unet recipe: its number must not move the recipe's mean.
    smoke = table.iloc[[0]].assign(run="unet.smoke", status="excluded", dice_pos=0.05, presence_roc_auc=0.5)
    table = pd.concat([table, smoke], ignore_index=True)
    summary = group_summary(table, METRICS).set_index("group")
    assert list(summary.index) == ["unet", "segresnet"]
    assert summary["n_runs"].tolist() == [4, 2]
    ranked = table[table["status"] == "ranked"]
    expected = ranked.groupby("group", sort=False)[list(METRICS)].agg(["mean", "std", "count"])
    for metric in METRICS:
        for group in summary.index:
            row, want = summary.loc[group], expected.loc[group, metric]
            assert row[f"{metric}_mean"] == pytest.approx(want["mean"], nan_ok=True)
            assert row[f"{metric}_sd"] == pytest.approx(want["std"], nan_ok=True)
            assert row[f"{metric}_n"] == want["count"]
    assert summary.loc["unet", "dice_pos_mean"] == pytest.approx(np.mean([0.60, 0.64, 0.59]))
    assert math.isnan(summary.loc["segresnet", "dice_pos_sd"])


def test_undefined_values_show_as_a_dash_never_as_zero():
    parser = parsed(leaderboard_html(seed_table(), seed_settings(), METRICS, "seeds"))
    failed = run_rows(parser)["segresnet.seed1"]
    for header in ("dice_pos", "presence_roc_auc", "Δ dice_pos", "mean rank"):
        attrs, text = cell(parser, failed, header)
        assert text.startswith(UNDEFINED) and attrs["data-num"] == ""
    assert cell(parser, failed, "dice_pos")[0]["title"] == f"n = {UNDEFINED}"
    # A run whose group has one seed has no noise floor: the floor is undefined, not 0.
    assert cell(parser, run_rows(parser)["nnunet"], "Δ dice_pos")[1] == f"+0.060 (floor {UNDEFINED})"


def test_run_names_tags_and_settings_are_escaped():
    table = seed_table()
    table.loc[5, ["run", "group", "tags"]] = [EVIL, EVIL, EVIL]
    settings = differing_settings(
        {EVIL: {"model": {"network": EVIL}}, "unet.seed0": {"model": {"network": "x"}}}
    )
    text = leaderboard_page(table, settings, METRICS, EVIL)
    assert EVIL not in text and "&lt;script&gt;" in text
    parser = parsed(text)
    row = run_rows(parser)[EVIL]
    assert cell(parser, row, "run")[1] == EVIL + "tags: " + EVIL
    assert cell(parser, row, "model.network")[1] == EVIL


def test_failed_row_is_greyed_with_its_reason_stage_and_log():
    parser = parsed(leaderboard_html(seed_table(), seed_settings(), METRICS, "seeds"))
    failed = run_rows(parser)["segresnet.seed1"]
    assert failed["class"] == "failed"
    assert cell(parser, failed, "status")[1] == (
        "failedthe train stage failedfailed at stage train, log logs/segresnet.seed1/train.log"
    )
    assert "failed at" not in cell(parser, run_rows(parser)["nnunet"], "status")[1]


def test_metric_cells_show_interval_and_n_and_the_baseline_is_marked():
    parser = parsed(leaderboard_html(seed_table(), seed_settings(), METRICS, "seeds"))
    rows = run_rows(parser)
    attrs, text = cell(parser, rows["unet.seed1"], "dice_pos")
    assert text == "0.640 [0.600, 0.680]" and attrs["title"] == "n = 40"
    assert cell(parser, rows["unet.seed0"], "run")[1] == "unet.seed0 baseline"
    assert "baseline" in rows["unet.seed0"]["class"]


def test_delta_smaller_than_its_noise_floor_is_marked_and_the_legend_says_why():
    text = leaderboard_html(seed_table(), seed_settings(), METRICS, "seeds")
    parser = parsed(text)
    rows = run_rows(parser)
    small, text_small = cell(parser, rows["unet.seed1"], "Δ dice_pos")  # 0.04 > floor 0.026
    within, text_within = cell(parser, rows["unet.seed2"], "Δ dice_pos")  # -0.01 < floor 0.026
    assert text_small == "+0.040 (floor 0.026)" and "below-floor" not in small["class"]
    assert text_within == "-0.010 (floor 0.026)" and "below-floor" in within["class"]
    assert "from 3 values" in within["title"] and "smaller than its floor" in text


def test_cells_hold_raw_numbers_and_headers_their_sort_kind_for_the_script():
    table = seed_table()
    parser = parsed(leaderboard_html(table, seed_settings(), METRICS, "seeds"))
    rows = run_rows(parser)
    for run, dice in zip(table["run"], table["dice_pos"], strict=True):
        raw = cell(parser, rows[run], "dice_pos")[0]["data-num"]
        assert (raw == "" and math.isnan(dice)) or float(raw) == dice
    kinds = {text: attrs["data-kind"] for attrs, text in parser.headers}
    assert kinds["dice_pos"] == kinds["mean rank"] == kinds["train.seed"] == kinds["seed"] == "num"
    assert kinds["run"] == kinds["status"] == kinds["model.network"] == "text"
    assert "lesionflowSort" in parser.script
    assert all("lesionflowSort(this)" in attrs["onclick"] for attrs, _ in parser.headers)


def test_page_is_self_contained_and_the_fragment_embeds_in_a_notebook_output():
    text = leaderboard_page(seed_table(), seed_settings(), METRICS, "seeds")
    assert text.startswith("<!DOCTYPE html>") and "<style>" in text and "<script>" in text
    for outside in ("http://", "https://", "src=", "<link", "@import", "url("):
        assert outside not in text
    fragment = leaderboard_html(seed_table(), seed_settings(), METRICS, "seeds")
    assert fragment in text and "<html" not in fragment and "<body" not in fragment


def test_compare_stage_leaderboard_renders_with_paired_intervals():
    table = board_with_intervals()
    parser = parsed(leaderboard_html(table, pd.DataFrame(), ("dice_pos", "lesion_f1"), "compare"))
    rows = run_rows(parser)
    assert sorted(rows) == sorted(table["run"]) and len(parser.rows) == len(table)
    assert rows["quick"]["class"] == "excluded"
    attrs, text = cell(parser, rows["segresnet"], "Δ dice_pos")
    assert text == "+0.100" and "interval [+0.080, +0.120]" in attrs["title"]
    assert "Δ lesion_f1" not in [text for _, text in parser.headers]  # no delta_lesion_f1 column


def test_regression_leaderboard_takes_n_and_delta_intervals_from_its_own_columns():
    table = pd.DataFrame(
        {
            "run": ["a", "b"],
            "status": ["ranked", "ranked"],
            "is_baseline": [True, False],
            "srmse": [0.5, 0.4],
            "srmse_ci_low": [0.45, 0.35],
            "srmse_ci_high": [0.55, 0.45],
            "n": [30, 30],
            "delta_srmse": [0.0, -0.1],
            "delta_srmse_ci_low": [0.0, -0.15],
            "delta_srmse_ci_high": [0.0, -0.05],
        }
    )
    parser = parsed(leaderboard_html(table, pd.DataFrame(), ("srmse",), "regression"))
    row = run_rows(parser)["b"]
    assert cell(parser, row, "srmse") == (
        {"data-num": "0.4", "title": "n = 30", "class": "num"},
        "0.400 [0.350, 0.450]",
    )
    attrs, text = cell(parser, row, "Δ srmse")
    assert text == "-0.100" and "interval [-0.150, -0.050]" in attrs["title"]


def test_a_missing_metric_column_is_an_error_naming_it():
    with pytest.raises(LesionflowError, match="lacks columns \\['lesion_f1'\\]"):
        leaderboard_html(seed_table(), pd.DataFrame(), ("dice_pos", "lesion_f1"), "seeds")


def test_write_leaderboard_html_writes_the_page(tmp_path):
    path = tmp_path / "compare" / "leaderboard.html"
    write_leaderboard_html(seed_table(), seed_settings(), METRICS, "seeds", path)
    assert path.read_text() == leaderboard_page(seed_table(), seed_settings(), METRICS, "seeds")
    assert [p.name for p in path.parent.iterdir()] == ["leaderboard.html"]


# --- the sort script, run by node on a minimal stand-in for the DOM -----------------------------

FAKE_DOM = """
const data = JSON.parse(require("fs").readFileSync(0, "utf8"));
const move = (parent, child) => {
  if (child.parentNode) child.parentNode.children.splice(child.parentNode.children.indexOf(child), 1);
  child.parentNode = parent;
  return child;
};
const node = (attrs, text) => ({
  children: [], textContent: text || "", dataset: Object.fromEntries(Object.entries(attrs)
    .filter(([k]) => k.startsWith("data-")).map(([k, v]) => [k.slice(5), v])), cls: attrs.class || "",
  appendChild(c) { this.children.push(move(this, c)); },
  insertBefore(c, ref) {
    if (c === ref) return;
    move(this, c);
    this.children.splice(this.children.indexOf(ref), 0, c);
  },
  get firstChild() { return this.children[0]; },
  get rows() { return this.children.slice(); },
  querySelector() { return this.children.find((r) => r.cls === "summary") || null; },
});
const table = node({}), head = node({});
const heads = data.headers.map(([attrs, text]) => node(attrs, text));
heads.forEach((th) => head.appendChild(th));
Object.defineProperty(table, "tBodies", {get() { return this.children.slice(); }});
for (const group of data.groups) {
  const body = node({});
  table.appendChild(body);
  for (const [cls, cells] of group) {
    const row = node({class: cls});
    cells.forEach(([attrs, text]) => row.appendChild(node(attrs, text)));
    row.label = (cls === "summary" ? "summary:" : "") + cells[0][0]["data-text"];
    body.appendChild(row);
  }
}
heads.forEach((th) => { th.closest = () => table; });
global.window = {};
eval(data.script);
const orders = data.clicks.map((label) => {
  window.lesionflowSort(heads.find((th) => th.textContent === label));
  return table.children.map((body) => body.children.map((row) => row.label));
});
console.log(JSON.stringify(orders));
"""


def groups_of(text: str) -> list:
    """The rows of each <tbody> as (class, cells)."""
    return [
        [(row["class"], row["cells"]) for row in parsed(f"<table><tr><th></th></tr>{body}</table>").rows]
        for body in text.split("<tbody>")[1:]
    ]


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_sort_script_sorts_numbers_within_and_across_groups_with_undefined_last():
    text = leaderboard_html(seed_table(), seed_settings(), METRICS, "seeds")
    parser = parsed(text)
    clicks = ["presence_roc_auc", "presence_roc_auc", "run"]
    data = {"headers": parser.headers, "groups": groups_of(text), "script": parser.script, "clicks": clicks}
    result = subprocess.run(
        ["node", "-e", FAKE_DOM],
        input=json.dumps(data),
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    ascending, descending, by_name = json.loads(result.stdout)
    # Groups by their summary's mean AUC (unet 0.83, segresnet 0.90), the lone run by its own (0.88);
    # the run without an AUC is last within its group in both directions.
    assert ascending == [
        ["summary:unet", "unet.seed0", "unet.seed2", "unet.seed1"],
        ["nnunet"],
        ["summary:segresnet", "segresnet.seed0", "segresnet.seed1"],
    ]
    assert descending == [
        ["summary:segresnet", "segresnet.seed0", "segresnet.seed1"],
        ["nnunet"],
        ["summary:unet", "unet.seed2", "unet.seed0", "unet.seed1"],
    ]
    assert [group[0] for group in by_name] == ["nnunet", "summary:segresnet", "summary:unet"]
