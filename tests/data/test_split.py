"""Tests of the subject-grouped, lesion-stratified split and its summary table and figure."""

from __future__ import annotations

import json
import runpy
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from manifests import write_pair
from schema_settings import split_section, split_settings, synthetic_settings
from sklearn.model_selection import StratifiedGroupKFold

from lesionflow.data.dataset import read_manifest
from lesionflow.data.manifest import lesion_presence
from lesionflow.data.score_column import score_bins
from lesionflow.data.split import make_score_split, make_split, run_split, split_summary
from lesionflow.data.synthetic import generate_dataset
from lesionflow.pipeline.errors import LesionflowError

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"


@pytest.fixture(scope="module")
def manifest_path(tmp_path_factory) -> Path:
    settings = synthetic_settings(n_images=150, image_size=32, seed=5)
    return generate_dataset(tmp_path_factory.mktemp("data"), **settings)


@pytest.fixture(scope="module")
def manifest(manifest_path) -> pd.DataFrame:
    return read_manifest(manifest_path)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_no_subject_in_two_splits(manifest, seed):
    split = make_split(manifest, **split_settings(seed=seed))
    assert (split.groupby("subject")["split"].nunique() == 1).all()


def test_every_image_is_assigned_exactly_once_in_manifest_order(manifest):
    split = make_split(manifest, **split_settings())
    assert list(split.columns) == ["image_id", "subject", "split", "lesion_positive"]
    assert split["image_id"].tolist() == manifest["image_id"].tolist()
    assert set(split["split"]) == {"train", "val", "test"}
    assert split["lesion_positive"].dtype == bool


def test_split_is_deterministic_from_seed(manifest):
    four, five = split_settings(seed=4), split_settings(seed=5)
    pd.testing.assert_frame_equal(make_split(manifest, **four), make_split(manifest, **four))
    assert not make_split(manifest, **four)["split"].equals(make_split(manifest, **five)["split"])


@pytest.mark.parametrize("fractions", [(0.6, 0.2, 0.2), (0.7, 0.15, 0.15), (0.5, 0.25, 0.25)])
def test_fractions_are_met_approximately(manifest, fractions):
    train, val, test = fractions
    split = make_split(manifest, **split_settings(train=train, val=val, test=test))
    shares = split["split"].value_counts(normalize=True)
    for name, wanted in zip(("train", "val", "test"), fractions, strict=True):
        assert shares[name] == pytest.approx(wanted, abs=0.06)


def test_lesion_rate_is_stratified_across_splits(manifest):
    split = make_split(manifest, **split_settings())
    overall = split["lesion_positive"].mean()
    rates = split.groupby("split")["lesion_positive"].mean()
    assert (rates - overall).abs().max() < 0.1


def test_dataset_without_lesions_still_splits(manifest_path, tmp_path):
    settings = synthetic_settings(n_images=30, image_size=32, lesion_free_fraction=1.0)
    split = make_split(read_manifest(generate_dataset(tmp_path, **settings)), **split_settings())
    assert not split["lesion_positive"].any()
    assert set(split["split"]) == {"train", "val", "test"}


@pytest.mark.parametrize(
    ("fractions", "key"),
    [
        ({"val": 0.0}, r"split\.val"),
        ({"test": 1.2}, r"split\.test"),
        ({"train": "0.6"}, r"split\.train"),
        ({"train": 0.5}, r"sum to 1"),
    ],
)
def test_bad_fraction_error_names_the_key(manifest, fractions, key):
    with pytest.raises(LesionflowError, match=key):
        make_split(manifest, **split_settings(**fractions))


def test_too_few_subjects_is_a_user_error(manifest):
    two_subjects = manifest[manifest["subject"].isin(manifest["subject"].unique()[:2])]
    with pytest.raises(LesionflowError, match="2 subject"):
        make_split(two_subjects, **split_settings())


def test_split_summary_counts_rows_in_train_val_test_order():
    split = pd.DataFrame(
        {
            "image_id": list("abcde"),
            "subject": list("abcde"),
            "split": ["test", "train", "train", "val", "train"],
            "lesion_positive": [True, True, False, False, False],
        }
    )
    summary = split_summary(split)
    assert summary["split"].tolist() == ["train", "val", "test"]
    assert summary["n"].tolist() == [3, 1, 1]
    assert summary["lesion_positive"].tolist() == [1, 0, 1]
    np.testing.assert_allclose(summary["lesion_rate"], [1 / 3, 0.0, 1.0])


def test_run_split_writes_split_and_summary_and_draws_nothing(manifest_path, tmp_path):
    run_split(manifest_path, split_section(), tmp_path)
    split = pd.read_csv(tmp_path / "split.csv", dtype={"subject": str})
    assert split["subject"].str.len().eq(4).all()  # leading zeros survive the round trip
    summary = pd.read_csv(tmp_path / "split_summary.csv")
    assert summary["n"].sum() == len(split) == 150
    # The analysis notebook draws the split; a figure here would put plotting into training's key.
    assert not list(tmp_path.glob("*.png"))


def test_run_split_refuses_incomplete_settings_naming_the_missing_keys(manifest_path, tmp_path):
    with pytest.raises(LesionflowError, match=r"missing split\.val, split\.seed"):
        run_split(manifest_path, {"train": 0.6, "test": 0.4, "nnunet_splits": None, "fold": 0}, tmp_path)
    assert not (tmp_path / "split.csv").exists()


def test_split_entry_point_reports_a_bad_setting_in_one_line(
    manifest_path, tmp_path, monkeypatch, capsys
):
    settings = json.dumps(split_section(val=0.3))
    argv = ["split.py", "--manifest", str(manifest_path), "--settings", settings]
    monkeypatch.setattr(sys, "argv", [*argv, "--out", str(tmp_path)])
    with pytest.raises(SystemExit) as exited:
        runpy.run_path(str(SCRIPTS / "split.py"), run_name="__main__")
    assert exited.value.code == 2
    stderr = capsys.readouterr().err
    assert stderr.count("\n") == 1 and stderr.startswith("lesionflow: error: split.")
    assert not (tmp_path / "split.csv").exists()


def manifest_with_split(manifest: pd.DataFrame, tmp_path: Path, subsets: list[str]) -> Path:
    """The generated manifest with a ``split`` column, written where run_split reads it."""
    fixed = manifest.assign(split=subsets)
    fixed.to_csv(tmp_path / "manifest.csv", index=False)
    return tmp_path / "manifest.csv"


def subject_subsets(manifest: pd.DataFrame) -> list[str]:
    """A split by subject: every subject's images in one subset, in a fixed rotation."""
    order = {subject: i for i, subject in enumerate(dict.fromkeys(manifest["subject"]))}
    return [("train", "train", "val", "test")[order[s] % 4] for s in manifest["subject"]]


def test_a_split_column_in_the_manifest_fixes_every_subset_and_fractions_are_not_used(manifest, tmp_path):
    subsets = subject_subsets(manifest)
    run_split(manifest_with_split(manifest, tmp_path, subsets), split_section(seed=7), tmp_path / "out")
    split = pd.read_csv(tmp_path / "out" / "split.csv", dtype={"image_id": str, "subject": str})
    assert split["split"].tolist() == subsets
    assert split["image_id"].tolist() == manifest["image_id"].tolist()
    assert split["lesion_positive"].tolist() == lesion_presence(manifest).tolist()


def test_a_fixed_split_that_puts_a_subject_in_two_subsets_is_refused_naming_it(manifest, tmp_path):
    subsets = subject_subsets(manifest)
    counts = manifest["subject"].value_counts(sort=False)
    first = counts[counts > 1].index[0]
    rows = np.flatnonzero(manifest["subject"].to_numpy() == first)
    subsets[rows[1]] = "test" if subsets[rows[0]] != "test" else "val"
    path = manifest_with_split(manifest, tmp_path, subsets)
    with pytest.raises(LesionflowError, match=rf"column 'split': 1 subject\(s\).*subject '{first}' in"):
        run_split(path, split_section(), tmp_path / "out")
    assert not (tmp_path / "out" / "split.csv").exists()


def test_a_fixed_split_without_a_validation_subset_is_refused(manifest, tmp_path):
    subsets = [s if s != "val" else "train" for s in subject_subsets(manifest)]
    with pytest.raises(LesionflowError, match=r"column 'split': no image is in val"):
        run_split(manifest_with_split(manifest, tmp_path, subsets), split_section(), tmp_path / "out")


def write_nnunet_splits(path: Path, manifest: pd.DataFrame) -> list[dict[str, list[str]]]:
    """Two folds over the subjects' rotation of ``subject_subsets``; its 'test' images are left out."""
    subsets = subject_subsets(manifest)
    ids = manifest["image_id"].tolist()
    train = [i for i, s in zip(ids, subsets, strict=True) if s == "train"]
    val = [i for i, s in zip(ids, subsets, strict=True) if s == "val"]
    half = len(train) // 2
    folds = [{"train": val + train[:half], "val": train[half:]}, {"train": train, "val": val}]
    path.write_text(json.dumps(folds))
    return folds


def test_a_fold_of_an_nnunet_splits_file_gives_train_and_val_and_every_other_image_is_test(
    manifest_path, manifest, tmp_path
):
    folds = write_nnunet_splits(tmp_path / "splits_final.json", manifest)
    settings = split_section(nnunet_splits=str(tmp_path / "splits_final.json"), fold=1)
    run_split(manifest_path, settings, tmp_path / "out")
    table = pd.read_csv(tmp_path / "out" / "split.csv", dtype={"image_id": str})
    split = table.set_index("image_id")["split"]
    assert sorted(split[split == "train"].index) == sorted(folds[1]["train"])
    assert sorted(split[split == "val"].index) == sorted(folds[1]["val"])
    assert (split == "test").sum() == len(manifest) - len(folds[1]["train"]) - len(folds[1]["val"]) > 0


@pytest.mark.parametrize(
    ("folds", "fold", "message"),
    [
        ({"train": []}, 0, r"is not an nnU-Net splits file \(a list of"),
        ([{"train": ["0000_1"], "val": ["nope"]}], 0, r"fold 0 of .* names 1 case\(s\) that are not .*nope"),
        ([{"train": ["0000_1"], "val": ["0000_1"]}], 0, r"puts 1 case\(s\) in train and val, e\.g\. 0000_1"),
        ([{"train": ["0000_1"], "val": []}], 3, r"split\.fold: 3, but .* has 1 folds \(0 to 0\)"),
    ],
)
def test_a_bad_nnunet_splits_file_is_refused_naming_the_key(
    manifest_path, tmp_path, folds, fold, message
):
    (tmp_path / "splits_final.json").write_text(json.dumps(folds))
    settings = split_section(nnunet_splits=str(tmp_path / "splits_final.json"), fold=fold)
    with pytest.raises(LesionflowError, match=message):
        run_split(manifest_path, settings, tmp_path / "out")
    assert not (tmp_path / "out" / "split.csv").exists()


# ---------------------------------------------------------------- splits by score bin

BINS = [2, 5, 10]
SUBSETS_ORDER = ["train", "val", "test"]
# How far a bin's share of a subset may be from its share of the whole dataset: a val or test
# subset of about 18 images moves a share by 0.056 per image (measured: at most 0.051 for seeds
# 0-9, against up to 0.27 when the same data are stratified by lesion presence).
BIN_SHARE_TOLERANCE = 0.08
LABELS = ["<2", "[2, 5)", "[5, 10)", ">=10"]


@pytest.fixture(scope="module")
def scored_path(tmp_path_factory) -> Path:
    """A data-stage manifest of 60 subjects with skewed scores (most below 2, few of 10 or more).

    Two in five subjects have a second visit, scored up to 3 points higher, so some subjects'
    visits fall into two bins.
    """
    folder = tmp_path_factory.mktemp("scored")
    rng = np.random.default_rng(11)
    first = np.concatenate(
        [rng.uniform(0, 2, 30), rng.uniform(2, 5, 15), rng.uniform(5, 10, 10), rng.uniform(10, 34, 5)]
    )
    rows = ["image,mask,subject,image_id,score,visit"]
    for subject, score in enumerate(rng.permutation(first)):
        visits = [score] + ([min(34.0, score + rng.uniform(0, 3))] if rng.random() < 0.4 else [])
        for visit, value in enumerate(visits, start=1):
            name = f"sub{subject:02d}_v{visit}"
            write_pair(folder, name, lesion_pixels=int(value > 1), size=8)
            rows.append(f"images/{name}.png,masks/{name}.png,{subject:04d},{name},{value:.3f},{visit}")
    (folder / "manifest.csv").write_text("\n".join(rows) + "\n")
    return folder / "manifest.csv"


@pytest.fixture(scope="module")
def scored(scored_path) -> pd.DataFrame:
    """The scored manifest as read_manifest gives it (scores as text)."""
    return read_manifest(scored_path)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_score_split_keeps_every_subject_and_all_its_visits_in_one_subset(scored, seed):
    split = make_score_split(scored, **split_settings(seed=seed), cuts=BINS)
    assert (split.groupby("subject")["split"].nunique() == 1).all()
    assert split["image_id"].tolist() == scored["image_id"].tolist()
    assert scored.groupby("subject").size().max() == 2  # visits really share a subject


def largest_bin_share_gap(split: pd.DataFrame) -> float:
    """The largest gap between a bin's share of a subset and its share of all images."""
    overall = split["score_bin"].value_counts(normalize=True)
    shares = split.groupby("split")["score_bin"].value_counts(normalize=True).unstack(fill_value=0.0)
    return float((shares[overall.index] - overall).abs().to_numpy().max())


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
def test_score_split_balances_every_bin_and_rare_bins_reach_train(scored, seed):
    split = make_score_split(scored, **split_settings(seed=seed), cuts=BINS)
    assert largest_bin_share_gap(split) <= BIN_SHARE_TOLERANCE
    subjects_per_bin = split.groupby("score_bin")["subject"].nunique()
    train_bins = set(split.loc[split["split"] == "train", "score_bin"])
    assert set(subjects_per_bin[subjects_per_bin >= 3].index) <= train_bins


def test_score_stratification_balances_bins_better_than_presence_stratification(scored):
    bins = score_bins(scored["score"].astype(float).to_numpy(), BINS)
    gaps = {"score": [], "presence": []}
    for seed in range(5):
        by_score = make_score_split(scored, **split_settings(seed=seed), cuts=BINS)
        gaps["score"].append(largest_bin_share_gap(by_score))
        presence = make_split(scored, **split_settings(seed=seed)).assign(score_bin=bins)
        gaps["presence"].append(largest_bin_share_gap(presence))
    assert max(gaps["score"]) < np.mean(gaps["presence"])


def test_score_bins_of_the_split_follow_the_labels(scored):
    split = make_score_split(scored, **split_settings(), cuts=BINS)
    scores = scored["score"].astype(float).to_numpy()
    np.testing.assert_array_equal(split["score"], scores)
    expected = np.select([scores < 2, scores < 5, scores < 10], LABELS[:3], LABELS[3])
    assert split["score_bin"].tolist() == expected.tolist()
    assert list(split.columns) == ["image_id", "subject", "split", "lesion_positive", "score", "score_bin"]


def test_run_split_auto_stratifies_by_score_when_the_data_have_scores(scored_path, scored, tmp_path):
    run_split(scored_path, split_section(seed=3), tmp_path)
    written = pd.read_csv(tmp_path / "split.csv", dtype={"image_id": str, "subject": str})
    expected = make_score_split(scored, **split_settings(seed=3), cuts=BINS)
    assert written["split"].tolist() == expected["split"].tolist()
    assert written["score_bin"].tolist() == expected["score_bin"].tolist()
    np.testing.assert_allclose(written["score"], expected["score"])


def test_run_split_with_presence_draws_the_presence_split_and_still_adds_scores(
    scored_path, scored, tmp_path
):
    run_split(scored_path, split_section(stratify="presence"), tmp_path)
    written = pd.read_csv(tmp_path / "split.csv", dtype={"image_id": str, "subject": str})
    assert written["split"].tolist() == make_split(scored, **split_settings())["split"].tolist()
    assert {"score", "score_bin"} <= set(written.columns)


def test_split_summary_gains_score_statistics_and_a_count_per_bin(scored_path, tmp_path):
    run_split(scored_path, split_section(), tmp_path)
    split = pd.read_csv(tmp_path / "split.csv", dtype={"image_id": str, "subject": str})
    summary = pd.read_csv(tmp_path / "split_summary.csv").set_index("split")
    assert list(summary.columns) == [
        "n", "lesion_positive", "lesion_rate", "score_mean", "score_median", "score_min", "score_max",
        *(f"n_{label}" for label in LABELS),
    ]
    for name in ("mean", "median", "min", "max"):
        expected = split.groupby("split")["score"].agg(name)[SUBSETS_ORDER]
        np.testing.assert_allclose(summary.loc[SUBSETS_ORDER, f"score_{name}"], expected)
    counts = pd.crosstab(split["split"], split["score_bin"]).reindex(SUBSETS_ORDER, columns=LABELS).fillna(0)
    bins = summary.loc[SUBSETS_ORDER, [f"n_{label}" for label in LABELS]]
    assert bins.to_numpy().tolist() == counts.to_numpy().tolist() and (bins.sum(axis=1) == summary["n"]).all()


def test_split_summary_of_an_empty_subset_has_nan_score_statistics_and_zero_counts():
    split = pd.DataFrame({"split": ["train", "val"], "lesion_positive": [True, False], "score": [1.0, 12.0]})
    summary = split_summary(split, BINS).set_index("split")
    assert summary.loc["test", "n"] == 0 and np.isnan(summary.loc["test", "score_mean"])
    assert summary.loc["train", ["n_<2", "n_[2, 5)", "n_[5, 10)", "n_>=10"]].tolist() == [1, 0, 0, 0]
    assert summary.loc["val", "n_>=10"] == 1


def test_segmentation_outputs_have_no_score_columns(manifest_path, tmp_path):
    run_split(manifest_path, split_section(), tmp_path)
    split_columns = ["image_id", "subject", "split", "lesion_positive"]
    assert list(pd.read_csv(tmp_path / "split.csv").columns) == split_columns
    summary_columns = ["split", "n", "lesion_positive", "lesion_rate"]
    assert list(pd.read_csv(tmp_path / "split_summary.csv").columns) == summary_columns


@pytest.mark.parametrize("stratify", ["auto", "presence"])
def test_presence_split_is_unchanged_a_stratified_group_kfold_dealt_test_val_train(
    manifest_path, manifest, tmp_path, stratify
):
    run_split(manifest_path, split_section(seed=2, stratify=stratify), tmp_path)
    written = pd.read_csv(tmp_path / "split.csv", dtype={"image_id": str, "subject": str})
    # The split of before score bins existed, by hand: 5 folds for 0.6 / 0.2 / 0.2, fold 0 test,
    # fold 1 val, the rest train.
    subjects = manifest["subject"].astype(str).to_numpy()
    folds = StratifiedGroupKFold(n_splits=5, shuffle=True, random_state=2)
    expected = np.empty(len(manifest), dtype=object)
    for fold, (_, held_out) in enumerate(folds.split(subjects, lesion_presence(manifest), groups=subjects)):
        expected[held_out] = ("test", "val", "train", "train", "train")[fold]
    assert written["split"].tolist() == expected.tolist()


def test_score_stratification_without_scores_is_an_error_naming_split_stratify(manifest_path, tmp_path):
    with pytest.raises(LesionflowError, match=r"^split\.stratify: 'score' needs scores, .* no 'score' col"):
        run_split(manifest_path, split_section(stratify="score"), tmp_path)
    assert not (tmp_path / "split.csv").exists()


def test_bad_score_bins_are_refused_naming_the_key(scored_path, tmp_path):
    with pytest.raises(LesionflowError, match=r"^split\.score_bins: expected a non-empty list of increasing"):
        run_split(scored_path, split_section(score_bins=[5, 2]), tmp_path)


def test_a_fixed_split_with_scores_gains_score_and_bin_columns(scored, tmp_path):
    subsets = subject_subsets(scored)
    run_split(manifest_with_split(scored, tmp_path, subsets), split_section(), tmp_path / "out")
    written = pd.read_csv(tmp_path / "out" / "split.csv", dtype={"image_id": str, "subject": str})
    assert written["split"].tolist() == subsets
    assert written["score_bin"].tolist() == score_bins(scored["score"].astype(float).to_numpy(), BINS)
    assert "n_>=10" in pd.read_csv(tmp_path / "out" / "split_summary.csv").columns
