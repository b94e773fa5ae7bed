"""Tests of lesionflow.model.dual_head: the bottleneck of every network, the presence head, its loss."""

import copy

import pytest
import torch
from monai.losses import DeepSupervisionLoss, DiceCELoss
from monai.networks import nets
from torch import nn

from lesionflow.model.dual_head import DualHead, bottleneck_of, dual_head_loss, presence_targets
from lesionflow.model.networks import NETWORKS, build_network
from lesionflow.pipeline.errors import LesionflowError

# Tiny 2D networks and how often each downsamples (its bottleneck is input / 2**depth).
TINY = {
    "UNet": ({"channels": (4, 8, 8), "strides": (2, 2), "num_res_units": 1}, 2),
    "AttentionUnet": ({"channels": (4, 8, 8), "strides": (2, 2)}, 2),
    # Four downsamplings: 32 leaves 2x2, as instance norm needs more than one element in training.
    "BasicUNet": ({"features": (4, 4, 8, 8, 8, 4)}, 4),
    "SegResNet": (
        {
            "init_filters": 4,
            "blocks_down": (1, 1, 1),
            "blocks_up": (1, 1),
            "norm": ("group", {"num_groups": 2}),
        },
        2,
    ),
    "DynUNet": (
        {
            "kernel_size": [[3, 3]] * 3,
            "strides": [[1, 1], [2, 2], [2, 2]],
            "upsample_kernel_size": [[2, 2]] * 2,
            "filters": [4, 8, 8],
        },
        2,
    ),
}


def tiny(name: str, **extra) -> nn.Module:
    kwargs, _ = TINY[name]
    torch.manual_seed(0)
    return build_network({"network": name, "spatial_dims": 2, "kwargs": {**kwargs, **extra}}, 1)


def side(name: str) -> int:
    return 32 if name == "BasicUNet" else 16


def first_conv(network: nn.Module) -> nn.Module:
    return next(m for m in network.modules() if isinstance(m, nn.modules.conv._ConvNd))


def test_tiny_networks_cover_every_network_lesionflow_builds():
    assert set(TINY) == set(NETWORKS)


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("name", sorted(TINY))
def test_every_network_gives_its_segmentation_maps_and_one_presence_logit_per_image_in_2d(name, training):
    model = DualHead(tiny(name)).train(training)
    x = torch.rand(3, 1, side(name), side(name))
    segmentation, presence = model(x)
    assert segmentation.shape == (3, 1, side(name), side(name))
    assert presence.shape == (3,)


@pytest.mark.parametrize(
    "name, kwargs",
    [
        ("UNet", {"channels": (4, 8), "strides": (2,)}),
        (
            "SegResNet",
            {
                "init_filters": 4,
                "blocks_down": (1, 1),
                "blocks_up": (1,),
                "norm": ("group", {"num_groups": 2}),
            },
        ),
    ],
)
def test_unet_and_segresnet_give_both_outputs_in_3d(name, kwargs):
    network = build_network({"network": name, "spatial_dims": 3, "kwargs": kwargs}, 1)
    bottleneck, channels = bottleneck_of(network)
    seen = []
    bottleneck.register_forward_hook(lambda module, inputs, output: seen.append(output.shape))
    segmentation, presence = DualHead(network)(torch.rand(2, 1, 8, 8, 8))
    assert segmentation.shape == (2, 1, 8, 8, 8)
    assert presence.shape == (2,)
    assert seen == [(2, channels, 4, 4, 4)]


@pytest.mark.parametrize("name", sorted(TINY))
def test_the_bottleneck_found_outputs_the_deepest_feature_map_with_the_channels_it_reports(name):
    network = tiny(name).eval()
    bottleneck, channels = bottleneck_of(network)
    outputs: dict[nn.Module, tuple] = {}

    def record(module, inputs, output):
        # A hook that returned the shape would replace the module's output with it.
        if isinstance(output, torch.Tensor):
            outputs.setdefault(module, tuple(output.shape))

    for module in network.modules():
        module.register_forward_hook(record)
    with torch.no_grad():
        network(torch.rand(1, 1, side(name), side(name)))
    depth = TINY[name][1]
    deepest = side(name) // 2**depth
    assert outputs[bottleneck] == (1, channels, deepest, deepest)
    assert min(shape[-1] for shape in outputs.values() if len(shape) == 4) == deepest


def test_an_unknown_network_is_an_error_naming_it():
    network = nets.VNet(spatial_dims=2, in_channels=1, out_channels=1)
    with pytest.raises(LesionflowError, match="VNet"):
        bottleneck_of(network)


def test_a_subclass_of_a_known_network_counts_as_unknown():
    class Wrapped(nets.UNet):
        pass

    with pytest.raises(LesionflowError, match="Wrapped"):
        DualHead(Wrapped(spatial_dims=2, in_channels=1, out_channels=1, channels=(4, 8), strides=(2,)))


@pytest.mark.parametrize("name", sorted(TINY))
def test_an_untrained_head_says_about_one_half(name):
    model = DualHead(tiny(name)).eval()
    with torch.no_grad():
        _, presence = model(torch.rand(4, 1, side(name), side(name)) * 4)
    assert torch.allclose(torch.sigmoid(presence), torch.full((4,), 0.5), atol=0.02)


@pytest.mark.parametrize("name", sorted(TINY))
def test_the_presence_loss_alone_trains_the_head_and_the_encoder_but_not_the_decoder_output(name):
    network = tiny(name)
    model = DualHead(network).train()
    x = torch.rand(2, 1, side(name), side(name))
    _, presence = model(x)
    nn.functional.binary_cross_entropy_with_logits(presence, torch.tensor([1.0, 0.0])).backward()
    assert model.head.weight.grad.abs().sum() > 0
    assert model.head.bias.grad.abs().sum() > 0
    assert first_conv(network).weight.grad.abs().sum() > 0
    last_conv = [m for m in network.modules() if isinstance(m, nn.modules.conv._ConvNd)][-1]
    assert last_conv.weight.grad is None


def test_a_saved_and_loaded_state_dict_gives_identical_outputs(tmp_path):
    model = DualHead(tiny("UNet")).eval()
    torch.save({"state_dict": model.state_dict()}, tmp_path / "model.pt")
    torch.manual_seed(123)
    other = DualHead(build_network({"network": "UNet", "spatial_dims": 2, "kwargs": TINY["UNet"][0]}, 1))
    other.load_state_dict(torch.load(tmp_path / "model.pt", weights_only=True)["state_dict"])
    other.eval()
    x = torch.rand(2, 1, 16, 16)
    with torch.no_grad():
        expected, got = model(x), other(x)
    assert torch.equal(expected[0], got[0])
    assert torch.equal(expected[1], got[1])
    assert not torch.equal(expected[1], torch.zeros(2))


def test_the_segmentation_is_what_the_wrapped_network_gives_and_keeps_no_features():
    network = tiny("UNet").eval()
    model = DualHead(network)
    x = torch.rand(2, 1, 16, 16)
    with torch.no_grad():
        alone = network(x)
        segmentation, _ = model(x)
    assert torch.equal(alone, segmentation)
    assert model._captured is None


def test_a_deep_copy_hooks_its_own_bottleneck():
    model = DualHead(tiny("UNet")).eval()
    twin = copy.deepcopy(model)
    x = torch.rand(2, 1, 16, 16)
    with torch.no_grad():
        assert torch.equal(model(x)[1], twin(x)[1])
        twin.head.bias.fill_(3.0)
        assert not torch.equal(model(x)[1], twin(x)[1])


def test_dynunet_deep_supervision_keeps_its_stacked_maps_in_training_and_the_loss_backpropagates():
    network = tiny("DynUNet", deep_supervision=True, deep_supr_num=1)
    model = DualHead(network).train()
    x = torch.rand(2, 1, 16, 16)
    masks = torch.zeros(2, 1, 16, 16)
    masks[0, 0, 4:8, 4:8] = 1
    segmentation, presence = model(x)
    assert segmentation.shape == (2, 2, 1, 16, 16)
    assert presence.shape == (2,)
    deep = DeepSupervisionLoss(DiceCELoss(sigmoid=True))
    total, parts = dual_head_loss(
        lambda logits, y: deep(list(torch.unbind(logits, dim=1)), y), segmentation, presence, masks, 0.5
    )
    total.backward()
    assert model.head.weight.grad.abs().sum() > 0
    assert set(parts) == {"loss", "segmentation_loss", "presence_loss"}
    model.eval()
    with torch.no_grad():
        assert model(x)[0].shape == (2, 1, 16, 16)


def test_presence_targets_are_one_for_any_lesion_voxel_and_zero_for_an_empty_mask():
    masks = torch.zeros(3, 1, 4, 4, 4)
    masks[1, 0, 3, 3, 3] = 1
    masks[2] = 1
    assert torch.equal(presence_targets(masks), torch.tensor([0.0, 1.0, 1.0]))


def test_the_dual_head_loss_is_the_segmentation_loss_plus_the_weighted_bce():
    torch.manual_seed(0)
    logits = torch.randn(2, 1, 8, 8)
    presence = torch.tensor([0.3, -1.2])
    masks = torch.zeros(2, 1, 8, 8)
    masks[1, 0, 2, 2] = 1
    seg_loss = DiceCELoss(sigmoid=True)
    total, parts = dual_head_loss(seg_loss, logits, presence, masks, 0.7)
    bce = nn.BCEWithLogitsLoss()(presence, torch.tensor([0.0, 1.0]))
    expected = seg_loss(logits, masks) + 0.7 * bce
    assert torch.allclose(total, expected)
    assert parts["presence_loss"] == pytest.approx(float(bce))
    assert parts["segmentation_loss"] == pytest.approx(float(seg_loss(logits, masks)))
    assert parts["loss"] == pytest.approx(float(expected))
