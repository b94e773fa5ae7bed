import numpy as np
import pytest

from lesionflow.data.lesion_classes import EXCLUSIVE, OVERLAPPING, REGIONS, lesion_classes
from lesionflow.pipeline.errors import LesionflowError

TUMOUR = {"classes": {"enhancing": 3, "oedema": 2, "necrosis": 1}}


def test_binary_data_has_no_classes():
    assert lesion_classes(None) is None


def test_a_label_map_splits_into_one_exclusive_channel_per_class_in_config_order():
    classes = lesion_classes({"classes": {"exudate": 1, "haemorrhage": 2}})
    label_map = np.array([[0, 1, 2], [2, 2, 0]], dtype=np.uint8)
    channels = classes.channels(label_map)
    assert classes.kind == EXCLUSIVE and classes.exclusive
    assert classes.names == ("exudate", "haemorrhage")
    assert channels.dtype == bool and channels.shape == (2, 2, 3)
    np.testing.assert_array_equal(channels[0], label_map == 1)
    np.testing.assert_array_equal(channels[1], label_map == 2)
    assert not (channels[0] & channels[1]).any()


def test_nested_regions_are_the_unions_of_their_classes_values():
    classes = lesion_classes(
        {
            **TUMOUR,
            "regions": {
                "whole": ["enhancing", "oedema", "necrosis"],
                "core": ["enhancing", "necrosis"],
                "active": ["enhancing"],
            },
        }
    )
    volume = np.random.default_rng(0).integers(0, 4, size=(5, 6, 7))
    channels = classes.channels(volume)
    assert classes.kind == REGIONS and not classes.exclusive
    assert classes.names == ("whole", "core", "active")
    np.testing.assert_array_equal(channels[0], volume > 0)
    np.testing.assert_array_equal(channels[1], (volume == 3) | (volume == 1))
    np.testing.assert_array_equal(channels[2], volume == 3)
    # Nested: each region lies inside the one before it.
    assert not (channels[1] & ~channels[0]).any() and not (channels[2] & ~channels[1]).any()


def test_a_class_outside_every_region_is_still_a_valid_label_value():
    regions = {"core": ["enhancing", "necrosis"], "enhancing_only": ["enhancing"]}
    classes = lesion_classes({**TUMOUR, "regions": regions})
    channels = classes.channels(np.array([[2, 3], [1, 0]]))
    np.testing.assert_array_equal(channels[0], [[False, True], [True, False]])


def test_a_label_value_of_no_class_is_refused_with_the_values_found():
    classes = lesion_classes({"classes": {"exudate": 1, "haemorrhage": 2}})
    with pytest.raises(LesionflowError, match=r"data.labels.classes: the mask holds the value\(s\) \[7\]"):
        classes.channels(np.array([[0, 1], [7, 2]]))


def test_mask_columns_give_overlapping_channels_stacked_by_class_name():
    classes = lesion_classes({"mask_columns": {"exudate": "mask_exudate", "haemorrhage": "mask_haemorrhage"}})
    a = np.array([[1, 1], [0, 0]], dtype=bool)
    b = np.array([[0, 1], [1, 0]], dtype=bool)
    stacked = classes.stacked({"haemorrhage": b, "exudate": a})
    assert classes.kind == OVERLAPPING and classes.columns == ("mask_exudate", "mask_haemorrhage")
    np.testing.assert_array_equal(stacked, np.stack([a, b]))
    with pytest.raises(LesionflowError, match=r"no mask given for the class\(es\) \['haemorrhage'\]"):
        classes.stacked({"exudate": a})
    with pytest.raises(LesionflowError, match="there is no label map to split"):
        classes.channels(a.astype(np.uint8))


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({}, "needs exactly one of classes"),
        ({"classes": {"a": 1}, "mask_columns": {"a": "mask_a"}}, "needs exactly one of classes"),
        ({"classes": {"a": 1}, "colours": {}}, r"'data.labels.colours' is not a key of data.labels"),
        ({"classes": {"a": 1}}, r"'data.labels' gives one class \(a\): one lesion class is binary data"),
        (
            {"classes": {"a": 1, "b": 2}, "regions": {"ab": ["a", "b"]}},
            r"'data.labels' gives one region \(ab\)",
        ),
        (
            {"classes": {"exudate": 1, "haemorrhage": 1}},
            r"'data.labels.classes.haemorrhage' has the value 1 of class 'exudate'",
        ),
        (
            {"classes": {"exudate": 0}},
            r"'data.labels.classes.exudate' is 0: a label value is an integer from 1",
        ),
        ({"classes": {"exudate": True}}, r"'data.labels.classes.exudate' is True"),
        ({"classes": {"Hard Exudate": 1}}, r"'data.labels.classes.Hard Exudate': a class name is lower-case"),
        ({"classes": {}}, r"'data.labels.classes' must map at least one class name"),
        (
            {"mask_columns": {"a": "mask"}},
            r"'data.labels.mask_columns.a' is 'mask': give the manifest column",
        ),
        (
            {"mask_columns": {"a": "m", "b": "m"}},
            r"'data.labels.mask_columns.b' names the column 'm' of class 'a'",
        ),
        ({"mask_columns": {"a": "m"}, "regions": {"r": ["a"]}}, r"'data.labels.regions' needs classes"),
        (
            {**TUMOUR, "regions": {"whole": ["enhancing", "cyst"]}},
            r"'data.labels.regions.whole' names 'cyst', which is not",
        ),
        ({**TUMOUR, "regions": {"whole": []}}, r"'data.labels.regions.whole' must list the distinct classes"),
        ({**TUMOUR, "regions": {"oedema": ["oedema"]}}, r"'data.labels.regions.oedema' is also a class name"),
        ({**TUMOUR, "regions": {"a": ["oedema"], "b": ["oedema"]}}, "two regions unite the same classes"),
    ],
)
def test_a_bad_labels_section_is_one_line_naming_its_key(section, message):
    with pytest.raises(LesionflowError, match=message) as error:
        lesion_classes(section)
    assert "\n" not in str(error.value)
