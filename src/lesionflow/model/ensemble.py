"""The ensemble stage: an ensemble run's probability maps, the mean of its members' maps image by image,
written as the infer stage's files.

Must never average maps of different images or of different sizes, nor read a subset other than the
one it writes: validation ensembles are tuned before any test map is averaged.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.special import logit

from lesionflow.pipeline import artifacts
from lesionflow.pipeline.errors import LesionflowError

SUBSETS = ("val", "test")


def mean_maps(paths: Sequence[Path], out: Path) -> list[str]:
    """Write the mean of the arrays of the .npz files ``paths`` (the same names and shapes in each)
    to ``out``, one name at a time; return the names."""
    with contextlib.ExitStack() as stack:
        members = [stack.enter_context(artifacts.open_arrays(path)) for path in paths]
        names = sorted(members[0])
        for path, arrays in zip(paths[1:], members[1:], strict=True):
            if sorted(arrays) != names:
                differ = sorted(set(arrays) ^ set(names))
                raise LesionflowError(f"{path}: its images differ from those of {paths[0]}: {differ[:5]}")
        add = stack.enter_context(artifacts.array_writer(out))
        for name in names:
            maps = [np.asarray(arrays[name], dtype=np.float32) for arrays in members]
            shapes = {m.shape for m in maps}
            if len(shapes) > 1:
                raise LesionflowError(f"ensemble: the members' maps of {name!r} differ in shape: {shapes}")
            add(name, np.mean(maps, axis=0).astype(np.float16))
    return names


def mean_presence(paths: Sequence[Path], image_ids: Sequence[str]) -> pd.DataFrame:
    """The members' presence classifier probabilities averaged per image: NaN unless every member
    has one (an ensemble of models without a presence head has none)."""
    probabilities = []
    for path in paths:
        table = pd.read_csv(path, dtype={"image_id": str}).set_index("image_id")
        missing = sorted(set(image_ids) - set(table.index))
        if missing:
            raise LesionflowError(f"{path}: lacks the image ids {missing[:5]}")
        probabilities.append(table.loc[list(image_ids), "presence_probability"].to_numpy(dtype=float))
    mean = np.mean(probabilities, axis=0)  # NaN wherever a member has none
    with np.errstate(divide="ignore"):
        logits = logit(mean)
    return pd.DataFrame({"image_id": list(image_ids), "presence_logit": logits, "presence_probability": mean})


def run_ensemble(
    member_folders: Sequence[str | os.PathLike], subset: str, out_dir: str | os.PathLike
) -> dict[str, Any]:
    """Write ``<subset>.npz``, ``<subset>_tiles.npz``, ``<subset>_presence.csv`` and
    ``<subset>_infer.json`` into ``out_dir``: the means of the members' (their infer folders) files."""
    if subset not in SUBSETS:
        raise LesionflowError(f"subset: expected one of {', '.join(SUBSETS)}, got {subset!r}")
    folders = [Path(folder) for folder in member_folders]
    if len(folders) < 2:
        raise LesionflowError(f"ensemble: expected at least two members, got {len(folders)}")
    out = Path(out_dir)
    image_ids = mean_maps([folder / f"{subset}.npz" for folder in folders], out / f"{subset}.npz")
    mean_maps([folder / f"{subset}_tiles.npz" for folder in folders], out / f"{subset}_tiles.npz")
    presence = mean_presence([folder / f"{subset}_presence.csv" for folder in folders], image_ids)
    artifacts.write_csv(presence, out / f"{subset}_presence.csv")
    kinds = {
        str(folder): artifacts.read_json(folder / f"{subset}_infer.json").get("kind", "probabilities")
        for folder in folders
    }
    masks = [folder for folder, kind in kinds.items() if kind == "masks"]
    notes = [f"members giving hard masks count as 0/1 votes: {', '.join(masks)}"] if masks else []
    record = {
        "subset": subset,
        "source": "ensemble",
        "members": [str(folder) for folder in folders],
        "kind": "probabilities",
        "n_images": len(image_ids),
        "notes": notes,
    }
    artifacts.write_json(out / f"{subset}_infer.json", record)
    print(f"ensemble {subset}: {len(image_ids)} images, mean of {len(folders)} members", file=sys.stderr)
    return record
