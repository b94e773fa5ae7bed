"""Tests of lesionflow.model.tta: exact inverses, averaging after inversion, batching, sliding window."""

import numpy as np
import pytest
import torch
from monai.inferers import sliding_window_inference

from lesionflow.model.tta import (
    TRANSFORMS,
    get_transforms,
    predict_batch,
    predict_probabilities,
    windows_across_images,
)
from lesionflow.pipeline.config import complete_run_section, load_schema
from lesionflow.pipeline.errors import LesionflowError

SW_OVERLAP = complete_run_section("infer", {})["sw_overlap"]
FIRST_NAMES = ("identity", "hflip", "vflip", "hvflip", "rot90", "rot180", "rot270")
# The 2D names and the flip names of the same flips.
SAME_FLIPS = [("vflip", "flip0"), ("hflip", "flip1"), ("hvflip", "flip01")]
ONLY_3D = ("flip2", "flip02", "flip12", "flip012")


def names_for(spatial_dims: int) -> list[str]:
    """Every transform name that suits images of ``spatial_dims`` spatial axes."""
    return sorted(name for name in TRANSFORMS if spatial_dims == 3 or name not in ONLY_3D)


def by_hand(name: str) -> tuple:
    """(forward, inverse) of transform ``name`` on (B, C, *spatial), written out from its name."""
    turns = {"rot90": 1, "rot180": 2, "rot270": 3}
    if name in turns:
        k = turns[name]
        return (lambda x: torch.rot90(x, k, (2, 3))), (lambda x: torch.rot90(x, -k, (2, 3)))
    axes = {"identity": "", "vflip": "0", "hflip": "1", "hvflip": "01"}.get(name, name[len("flip"):])
    dims = tuple(2 + int(axis) for axis in axes)
    flip = (lambda x: torch.flip(x, dims)) if dims else (lambda x: x)
    return flip, flip


class Recorder(torch.nn.Module):
    """Wraps a model and remembers the shape of every batch it was given."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model
        self.shapes: list[tuple[int, ...]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.shapes.append(tuple(x.shape))
        return self.model(x)


def pointwise_model() -> torch.nn.Module:
    """A 1x1 convolution: commutes with every flip and rotation."""
    torch.manual_seed(0)
    return torch.nn.Conv2d(3, 1, kernel_size=1)


def shifting_model() -> torch.nn.Module:
    """A conv whose only weight is off-centre: its output moves with the input, not symmetric."""
    conv = torch.nn.Conv2d(3, 1, kernel_size=3, padding=1, bias=False)
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[0, :, 0, 2] = torch.tensor([3.0, -2.0, 1.0])
    return conv


def images(shape=(3, 12, 20), n=3, seed=0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.random(shape, dtype=np.float32) for _ in range(n)]


@pytest.mark.parametrize(
    "name, spatial",
    [(name, (6, 9)) for name in names_for(2)] + [(name, (6, 9, 4)) for name in names_for(3)],
)
def test_each_inverse_restores_the_input_in_2d_and_3d(name, spatial):
    x = torch.rand((2, 3, *spatial))
    transform = TRANSFORMS[name]
    assert torch.equal(transform.inverse(transform.forward(x)), x)


@pytest.mark.parametrize("name", [*FIRST_NAMES, "flip0", "flip1", "flip01"])
def test_the_first_names_and_their_flips_act_on_the_first_two_spatial_axes_only(name):
    x = torch.rand((1, 1, 5, 5, 3))
    y = TRANSFORMS[name].forward(x)
    # Each slice along the last axis is transformed on its own: depth is left in place.
    for depth in range(3):
        assert torch.equal(TRANSFORMS[name].forward(x[..., depth]), y[..., depth])


def test_tta_of_an_equivariant_model_equals_identity_on_non_square_images():
    model, data = pointwise_model(), images()
    plain = predict_probabilities(model, data, ["identity"], None, 2, "cpu", SW_OVERLAP)
    tta = predict_probabilities(model, data, names_for(2), None, 2, "cpu", SW_OVERLAP)
    for a, b in zip(plain, tta, strict=True):
        assert a.shape == (12, 20) and a.dtype == np.float32
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_flip_tta_of_a_non_equivariant_model_is_the_average_of_inverted_predictions():
    model, data = shifting_model(), images()
    result = predict_probabilities(model, data, ["identity", "hflip", "vflip"], None, 4, "cpu", SW_OVERLAP)
    with torch.no_grad():
        x = torch.from_numpy(np.stack(data))
        plain = torch.sigmoid(model(x))
        hflip = torch.flip(torch.sigmoid(model(torch.flip(x, dims=(3,)))), dims=(3,))
        vflip = torch.flip(torch.sigmoid(model(torch.flip(x, dims=(2,)))), dims=(2,))
        expected = ((plain + hflip + vflip) / 3)[:, 0].numpy()
    np.testing.assert_allclose(np.stack(result), expected, atol=1e-6)
    assert not np.allclose(np.stack(result), plain[:, 0].numpy(), atol=1e-3)


def test_rot90_tta_on_a_non_square_image_returns_the_image_shape():
    model, data = shifting_model(), images((3, 8, 16), n=1)
    result = predict_probabilities(model, data, ["rot90", "rot270"], None, 1, "cpu", SW_OVERLAP)
    with torch.no_grad():
        x = torch.from_numpy(np.stack(data))
        r90 = torch.rot90(torch.sigmoid(model(torch.rot90(x, 1, (2, 3)))), -1, (2, 3))
        r270 = torch.rot90(torch.sigmoid(model(torch.rot90(x, 3, (2, 3)))), -3, (2, 3))
    assert result[0].shape == (8, 16)
    np.testing.assert_allclose(result[0], ((r90 + r270) / 2)[0, 0].numpy(), atol=1e-6)


def test_sliding_window_is_used_when_the_image_is_larger_than_the_roi():
    model = Recorder(pointwise_model())
    data = images((3, 48, 40), n=2)
    result = predict_probabilities(model, data, ["identity"], [16, 16], 2, "cpu", SW_OVERLAP)
    assert model.shapes and all(shape[2:] == (16, 16) for shape in model.shapes)
    with torch.no_grad():
        direct = torch.sigmoid(model.model(torch.from_numpy(np.stack(data))))[:, 0].numpy()
    np.testing.assert_allclose(np.stack(result), direct, atol=1e-5)


def test_an_image_of_roi_shape_takes_one_direct_pass_even_when_rotated():
    model = Recorder(pointwise_model())
    data = images((3, 16, 32), n=2)
    predict_probabilities(model, data, ["identity", "rot90"], [16, 32], 2, "cpu", SW_OVERLAP)
    assert model.shapes == [(2, 3, 16, 32), (2, 3, 32, 16)]


def test_images_are_batched_by_shape_and_returned_in_input_order():
    model = Recorder(pointwise_model())
    small, large = images((3, 8, 8), n=3, seed=1), images((3, 16, 16), n=2, seed=2)
    mixed = [small[0], large[0], small[1], large[1], small[2]]
    result = predict_probabilities(model, mixed, ["identity"], None, 2, "cpu", SW_OVERLAP)
    assert [r.shape for r in result] == [(8, 8), (16, 16), (8, 8), (16, 16), (8, 8)]
    assert sorted(shape[0] for shape in model.shapes) == [1, 2, 2]
    with torch.no_grad():
        alone = torch.sigmoid(model.model(torch.from_numpy(large[1])[None]))[0, 0].numpy()
    np.testing.assert_allclose(result[3], alone, atol=1e-6)


def test_unknown_transform_error_names_infer_tta_and_the_valid_names():
    with pytest.raises(LesionflowError) as err:
        get_transforms(["identity", "transpose"], 2)
    assert "infer.tta" in str(err.value)
    for name in TRANSFORMS:
        assert name in str(err.value)


@pytest.mark.parametrize("spatial", [(6, 9), (6, 9, 4)])
@pytest.mark.parametrize("old, new", SAME_FLIPS)
def test_the_first_flip_names_give_exactly_what_their_flip_names_give(old, new, spatial):
    x = torch.rand((2, 3, *spatial))
    forward, _ = by_hand(old)
    assert torch.equal(TRANSFORMS[old].forward(x), TRANSFORMS[new].forward(x))
    assert torch.equal(TRANSFORMS[old].forward(x), forward(x))
    assert torch.equal(TRANSFORMS[old].inverse(x), TRANSFORMS[new].inverse(x))


@pytest.mark.parametrize("name", names_for(3))
def test_each_3d_transform_moves_the_axes_its_name_says(name):
    x = torch.rand((1, 2, 8, 10, 6))
    forward, inverse = by_hand(name)
    assert torch.equal(TRANSFORMS[name].forward(x), forward(x))
    assert torch.equal(TRANSFORMS[name].inverse(x), inverse(x))


@pytest.mark.parametrize("name", ONLY_3D)
def test_a_flip_of_an_axis_2d_images_lack_is_refused_naming_infer_tta(name):
    with pytest.raises(LesionflowError, match=rf"infer\.tta: {name} .*2 spatial axes"):
        get_transforms(["identity", name], 2)
    assert len(get_transforms(["identity", name], 3)) == 2
    with pytest.raises(LesionflowError, match=rf"infer\.tta: {name} "):
        predict_probabilities(pointwise_model(), images(), [name], None, 2, "cpu", SW_OVERLAP)


def test_the_schema_offers_exactly_the_known_transforms():
    infer = load_schema()["$defs"]["run"]["properties"]["infer"]
    assert sorted(infer["properties"]["tta"]["items"]["enum"]) == sorted(TRANSFORMS)


def volume(shape=(1, 1, 8, 10, 6), seed=0) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).random(shape, dtype=np.float32))


def pointwise_model_3d() -> torch.nn.Module:
    """A 1x1x1 convolution: commutes with every flip and quarter turn of a volume."""
    torch.manual_seed(0)
    return torch.nn.Conv3d(1, 1, kernel_size=1).eval()


def asymmetric_model_3d() -> torch.nn.Module:
    """A 3x3x3 convolution with random weights: no flip or turn of a volume commutes with it."""
    generator = torch.Generator().manual_seed(0)
    conv = torch.nn.Conv3d(1, 1, kernel_size=3, padding=1)
    with torch.no_grad():
        conv.weight.copy_(torch.randn(conv.weight.shape, generator=generator))
        conv.bias.copy_(torch.randn(conv.bias.shape, generator=generator))
    return conv.eval()


@pytest.mark.parametrize("name", names_for(3))
def test_3d_tta_of_an_equivariant_model_equals_the_plain_prediction(name):
    # Without the inverse the result would be T(f(x)), which differs from f(x) for every T but identity.
    model, x = pointwise_model_3d(), volume()
    plain = predict_batch(model, x, get_transforms(["identity"], 3), None, 1, SW_OVERLAP)
    result = predict_batch(model, x, get_transforms([name], 3), None, 1, SW_OVERLAP)
    assert result.shape == (1, 1, 8, 10, 6)
    torch.testing.assert_close(result, plain, rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", names_for(3))
def test_3d_tta_of_a_non_equivariant_model_is_the_inverted_prediction_of_the_moved_volume(name):
    model, x = asymmetric_model_3d(), volume()
    forward, inverse = by_hand(name)
    result = predict_batch(model, x, get_transforms([name], 3), None, 1, SW_OVERLAP)
    with torch.no_grad():
        expected = inverse(torch.sigmoid(model(forward(x))))
        plain = torch.sigmoid(model(x))
    torch.testing.assert_close(result, expected, rtol=0, atol=1e-6)
    if name != "identity":
        assert (result - plain).abs().max() > 1e-2


def test_3d_tta_averages_every_inverted_prediction():
    model, x = asymmetric_model_3d(), volume((2, 1, 8, 10, 6))
    names = names_for(3)
    result = predict_batch(model, x, get_transforms(names, 3), None, 2, SW_OVERLAP)
    with torch.no_grad():
        each = [inverse(torch.sigmoid(model(forward(x)))) for forward, inverse in map(by_hand, names)]
    torch.testing.assert_close(result, torch.stack(each).mean(0), rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", ["identity", "flip2", "flip012", "rot90", "rot180"])
def test_3d_tta_through_the_sliding_window_turns_the_roi_with_the_volume(name):
    model, x = asymmetric_model_3d(), volume((1, 1, 11, 13, 7))
    roi = (4, 6, 4)
    forward, inverse = by_hand(name)
    turned = (6, 4, 4) if name == "rot90" else roi
    result = predict_batch(model, x, get_transforms([name], 3), roi, 2, SW_OVERLAP)
    with torch.no_grad():
        logits = sliding_window_inference(
            forward(x), turned, 2, model, overlap=SW_OVERLAP, mode="gaussian"
        )
    torch.testing.assert_close(result, inverse(torch.sigmoid(logits)), rtol=0, atol=1e-6)


def test_windows_of_consecutive_images_share_batches_until_their_shape_changes():
    model = Recorder(pointwise_model())
    rng = np.random.default_rng(0)
    small = [("small", (0, 0), rng.random((3, 8, 8), dtype=np.float32)) for _ in range(5)]
    large = [("large", (0, 0), rng.random((3, 16, 16), dtype=np.float32)) for _ in range(2)]
    out = list(windows_across_images(model, small + large, ["identity"], None, 4, "cpu", SW_OVERLAP))
    assert [tuple(shape) for shape in model.shapes] == [(4, 3, 8, 8), (1, 3, 8, 8), (2, 3, 16, 16)]
    assert [owner for owner, *_ in out] == ["small"] * 5 + ["large"] * 2
    # The same maps as predicted one window at a time.
    alone = predict_probabilities(
        pointwise_model(), [window for *_, window in small + large], ["identity"], None, 1, "cpu", SW_OVERLAP
    )
    for (_, _, prob, _), expected in zip(out, alone, strict=True):
        assert np.allclose(prob, expected, atol=1e-6)
