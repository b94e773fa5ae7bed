"""The built-in photographs with a second lesion type: haemorrhages beside the exudates."""

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from scipy import ndimage

from lesionflow.data.haemorrhages import EXUDATE_LABEL, HAEMORRHAGE_LABEL
from lesionflow.data.lesion_classes import lesion_classes
from lesionflow.data.synthetic import generate_dataset

N_IMAGES, SIZE, FREE, SEED = 40, 96, 0.3, 11


@pytest.fixture(scope="module")
def both(tmp_path_factory):
    """The same dataset generated without and with haemorrhages."""
    folders = {}
    for name, flag in (("binary", False), ("multi", True)):
        folders[name] = tmp_path_factory.mktemp(name)
        generate_dataset(folders[name], N_IMAGES, SIZE, FREE, SEED, haemorrhages=flag)
    return folders


def _read(folder, kind, image_id):
    return np.asarray(Image.open(folder / kind / f"{image_id}.png"))


def _ids(folder):
    return pd.read_csv(folder / "manifest.csv", dtype=str)["image_id"].tolist()


def test_masks_are_label_maps_with_every_pattern_of_the_two_classes(both):
    patterns = {"none": 0, "exudate": 0, "haemorrhage": 0, "both": 0}
    for image_id in _ids(both["multi"]):
        labels = _read(both["multi"], "masks", image_id)
        assert labels.dtype == np.uint8 and set(np.unique(labels)) <= {0, EXUDATE_LABEL, HAEMORRHAGE_LABEL}
        has = (EXUDATE_LABEL in labels, HAEMORRHAGE_LABEL in labels)
        patterns[{(0, 0): "none", (1, 0): "exudate", (0, 1): "haemorrhage", (1, 1): "both"}[has]] += 1
    assert patterns["none"] == round(FREE * N_IMAGES)
    assert all(count > 0 for count in patterns.values()), patterns


def test_photographs_without_haemorrhages_are_unchanged_and_their_masks_say_the_same(both):
    unchanged = 0
    for image_id in _ids(both["multi"]):
        labels = _read(both["multi"], "masks", image_id)
        if (
            HAEMORRHAGE_LABEL in labels
            or (labels == 0).all()
            and _read(both["binary"], "masks", image_id).any()
        ):
            continue  # haemorrhages drawn, or exudates dropped for a haemorrhage-only photograph
        np.testing.assert_array_equal(
            _read(both["multi"], "images", image_id), _read(both["binary"], "images", image_id)
        )
        np.testing.assert_array_equal(
            (labels == EXUDATE_LABEL) * 255, _read(both["binary"], "masks", image_id)
        )
        unchanged += 1
    assert unchanged >= round(FREE * N_IMAGES)


def test_haemorrhages_are_darker_and_redder_than_the_retina_around_them(both):
    darker = redder = n = 0
    for image_id in _ids(both["multi"]):
        blots = _read(both["multi"], "masks", image_id) == HAEMORRHAGE_LABEL
        if blots.sum() < 10:
            continue
        image = _read(both["multi"], "images", image_id).astype(float)
        ring = ndimage.binary_dilation(blots, iterations=4) & ~ndimage.binary_dilation(blots, iterations=1)
        ring &= image.sum(axis=-1) > 0  # inside the field of view
        inside, around = image[blots].mean(axis=0), image[ring].mean(axis=0)
        darker += inside[1] < around[1]
        redder += inside[0] / inside.sum() > around[0] / around.sum()
        n += 1
    assert n >= 5 and darker == n and redder >= 0.8 * n


def test_the_label_maps_split_into_the_two_classes_of_a_labels_section(both):
    classes = lesion_classes({"classes": {"exudate": EXUDATE_LABEL, "haemorrhage": HAEMORRHAGE_LABEL}})
    for image_id in _ids(both["multi"])[:10]:
        channels = classes.channels(_read(both["multi"], "masks", image_id))
        assert channels.shape == (2, SIZE, SIZE) and not (channels[0] & channels[1]).any()
