"""Run summaries, compare settings and leaderboards that the compare-stage and compare-notebook tests
build alike."""

import numpy as np

from lesionflow.evaluation.leaderboard import leaderboard
from lesionflow.pipeline.config import fill_defaults, load_schema
from lesionflow.reports.comparison import DELTA_METRICS


def compare_settings(**partial) -> dict:
    """The config's compare section with the schema's defaults filled, as the Snakefile passes it,
    plus every run's tags (none unless given)."""
    schema = load_schema()
    settings = fill_defaults(partial, schema["properties"]["compare"], schema)
    return {"tags": {}, **settings}


def ranked_summary(dice, iou, auc, ap) -> dict:
    """A summary.json of whole images with the four ranked test metrics only."""
    return {
        "level": "image",
        "resolution": "original",
        "val": {},
        "test": {"dice_pos": dice, "iou_pos": iou, "presence_roc_auc": auc, "presence_ap": ap},
    }


SUMMARIES = {
    "ours": ranked_summary(0.4, 0.3, 0.9, 0.75),
    "nnunet": ranked_summary(0.1, 0.05, 0.7, 0.3),
    "one_class": ranked_summary(0.2, 0.1, None, None),  # presence undefined (null in JSON)
}


def counted_summary(dice, auc=0.8, n_pred=10, n_images=12, **extra) -> dict:
    """A summary with a test section with lesion counts, as the evaluate stage writes it."""
    section = {
        "n_images": n_images,
        "n_ref_lesions": 9,
        "dice_pos": dice,
        "dice_pos_n": 8,
        "iou_pos": None if dice is None else dice * 0.8,
        "presence_roc_auc": auc,
        "presence_ap": auc,
        **extra,
    }
    if n_pred is not None:
        section["n_pred_lesions"] = n_pred
    return {"level": "image", "resolution": "original", "val": {}, "test": section}


STATUS_SUMMARIES = {
    "unet": counted_summary(0.6),
    "segresnet": counted_summary(0.7, auc=0.9),
    "quick": counted_summary(0.95, auc=0.99),  # best numbers, but tagged smoke
    "empty": counted_summary(0.0, auc=0.5, n_pred=0),
}
STATUS_TAGS = {"unet": [], "segresnet": ["ablation"], "quick": ["smoke"]}


def board(summaries, baseline, **options):
    """leaderboard() with the schema's compare.exclude_tags unless ``options`` give them."""
    return leaderboard(summaries, baseline, **{"exclude_tags": compare_settings()["exclude_tags"], **options})


def status_board(**kwargs):
    """Leaderboard of STATUS_SUMMARIES against 'unet': two ranked runs, one excluded (tagged smoke,
    which the schema's compare.exclude_tags holds), one failed."""
    return board(STATUS_SUMMARIES, "unet", **{"tags": STATUS_TAGS, **kwargs})


def board_with_intervals():
    """The status leaderboard with dice intervals and paired columns (NaN for the failed run)."""
    df = status_board()
    df["dice_pos_ci_low"], df["dice_pos_ci_high"] = df["dice_pos"] - 0.05, df["dice_pos"] + 0.05
    for metric in DELTA_METRICS:
        delta = df[metric] - 0.6
        df[f"paired_delta_{metric}"] = delta
        df[f"paired_delta_{metric}_ci_low"] = delta - 0.02
        df[f"paired_delta_{metric}_ci_high"] = delta.where(df["run"] != "empty") + 0.02
    df["wilcoxon_dice_p"] = [0.0004, np.nan, 0.2, np.nan]
    df["wilcoxon_dice_n"], df["median_dice_difference"], df["n_shared_images"] = 8, 0.05, 12
    return df
