"""Content keys: one spelling per value."""

from lesionflow.pipeline.keys import digest


def test_digest_ignores_dict_order_and_int_float_spelling():
    assert digest({"a": 1, "b": [1, 2.0]}) == digest({"b": [1.0, 2], "a": 1.0})
    assert digest({"a": 1}) != digest({"a": 2})
    assert len(digest({})) == 12
