"""A run of several lesion classes built by the library's stages in a temp dir: the built-in
photographs with haemorrhages (label maps), split, resized, trained two tiny epochs and predicted."""

from __future__ import annotations

from pathlib import Path

from schema_settings import split_section, top_level_section

from lesionflow.data.dataset import run_data
from lesionflow.data.preprocess import run_preprocess
from lesionflow.data.split import run_split
from lesionflow.model import train
from lesionflow.model.infer import run_infer
from lesionflow.pipeline.config import complete_run_section

CLASSES = {"classes": {"exudate": 1, "haemorrhage": 2}}
TINY_MODEL = {
    "network": "UNet",
    "spatial_dims": 2,
    "kwargs": {"channels": [4, 8, 16], "strides": [2, 2], "num_res_units": 0},
    "presence_head": False,
}


def tiny_train_settings(**train) -> dict:
    """The model and train sections of a tiny CPU run, schema defaults filled."""
    return {
        "model": dict(TINY_MODEL),
        "train": complete_run_section(
            "train",
            {"epochs": 2, "batch_size": 4, "learning_rate": 0.01, "device": "cpu", "num_workers": 0, **train},
        ),
    }


def build_class_run(root: Path, preprocess: dict | None = None) -> dict:
    """Every stage up to inference; returns the paths and the train summary."""
    synthetic = {"n_images": 24, "image_size": 48, "seed": 5, "haemorrhages": True}
    run_data(top_level_section("data", synthetic=synthetic, labels=CLASSES), root / "data")
    run_split(root / "data" / "manifest.csv", split_section(seed=2), root / "split")
    pre = root / "pre"
    run_preprocess(
        root / "data" / "manifest.csv",
        root / "split" / "split.csv",
        complete_run_section("preprocess", preprocess or {"max_size": 32}),
        pre,
    )
    summary = train.run_train(pre / "manifest.csv", pre / "split.csv", tiny_train_settings(), root / "train")
    infer = complete_run_section("infer", {"tta": ["identity", "hflip"], "device": "cpu"})
    for subset in ("val", "test"):
        run_infer(
            pre / "images.csv",
            pre / "preprocess.json",
            root / "train" / "model.pt",
            {"infer": infer},
            subset,
            root / "infer",
        )
    return {
        "root": root,
        "data": root / "data",
        "split": root / "split",
        "pre": pre,
        "infer": root / "infer",
        "summary": summary,
    }
