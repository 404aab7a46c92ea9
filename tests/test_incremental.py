"""Incremental occlusion inference equals one full forward pass per occluder position."""

import pytest
import torch
from torch import nn

from cnnvis.hooks import activations
from cnnvis.incremental import IncrementalOcclusion, forward_macs
from cnnvis.models import SamePad, build_model
from conftest import assert_argmax_up_to_ties


def occluded(image, tops, lefts, size, fill):
    """The naive reference: one copy of the image per position, the occluder painted in."""
    xs = image.repeat(len(tops), 1, 1, 1)
    fill = torch.as_tensor(fill, dtype=image.dtype).reshape(-1, 1, 1)
    for x, t, l in zip(xs, tops.tolist(), lefts.tolist()):
        x[:, max(t, 0):max(t + size, 0), max(l, 0):max(l + size, 0)] = fill
    return xs


def grid(image_size, size, stride):
    """Occluder corners from half outside the top-left border to half outside the bottom-right one."""
    starts = torch.arange(-(size // 2), image_size - size // 2, stride)
    tops, lefts = torch.meshgrid(starts, starts, indexing="ij")
    return tops.flatten(), lefts.flatten()


def lively(model, seed=0):
    """Weights that keep activations at unit scale (default inits shrink them to near-constant logits)."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            fan_in = m.weight[0].numel()
            m.weight.data = torch.randn(m.weight.shape, generator=g) * (2 / fan_in) ** 0.5
            if m.bias is not None:
                m.bias.data = torch.randn(m.bias.shape, generator=g) * 0.1
        elif isinstance(m, nn.BatchNorm2d):
            m.running_mean = torch.randn(m.num_features, generator=g) * 0.1
            m.running_var = torch.rand(m.num_features, generator=g) + 0.5
            m.weight.data = torch.rand(m.num_features, generator=g) + 0.5
            m.bias.data = torch.randn(m.num_features, generator=g) * 0.1
    return model.eval()


def assert_close(ours, ref):
    atol = 1e-4 * ref.abs().max().item()
    assert ref.std(0).max() > 10 * atol, "the reference barely varies with the occluder: the test could not fail"
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=atol)


def check(model, image, layer, channel, size, stride, batch=7, probabilities=True, **kw):
    tops, lefts = grid(image.shape[-1], size, stride)
    engine = IncrementalOcclusion(model, image, layer, channel, **kw)
    ours = [engine(tops[i:i + batch], lefts[i:i + batch], size, 0.4) for i in range(0, len(tops), batch)]
    with torch.no_grad():
        xs = occluded(image, tops, lefts, size, 0.4)
        ref_logits = model(xs)
        ref_act = activations(model, xs, [layer])[layer][:, channel] if layer else None
    if probabilities:
        assert_close(torch.cat([o[0] for o in ours]).softmax(1), ref_logits.softmax(1))
    assert_close(torch.cat([o[0] for o in ours]), ref_logits)
    if layer:
        assert_close(torch.cat([o[1] for o in ours]), ref_act)
    return engine


@pytest.mark.parametrize("name, input_size, layer, size, stride", [
    ("zfnet", 96, "conv2", 24, 20),
    ("zfnet", 96, "norm1", 9, 31),
    ("alexnet", 96, "conv3", 16, 23),
    ("vgg16", 64, "conv3_2", 12, 23),
    ("resnet18", 80, "layer2", 20, 19),
    ("resnet18", 64, "pool1", 7, 13),
])
def test_models_match_one_forward_per_position(name, input_size, layer, size, stride):
    torch.manual_seed(0)
    model = lively(build_model(name, num_classes=10, input_size=input_size))
    check(model, torch.rand(3, input_size, input_size), layer, 3, size, stride)


def test_efficientnet_lite0_pretrained_matches_at_odd_size():
    """TF 'SAME' padding is asymmetric and input-size dependent: an odd size exercises both sides."""
    torch.manual_seed(0)
    model = build_model("efficientnet_lite0", pretrained=True, input_size=77).eval()
    check(model, torch.rand(3, 77, 77), "stage3", 5, 15, 21, batch=8)


def tiny_net():
    """Every rule of the engine in one small network, with awkward geometry."""
    trunk = nn.Sequential(
        nn.Conv2d(3, 6, (5, 3), stride=(2, 1), padding=(2, 0)),
        nn.BatchNorm2d(6), nn.ReLU6(),
        nn.MaxPool2d(3, 2, padding=1, ceil_mode=True),
        nn.LocalResponseNorm(3),
        SamePad(3, 2), nn.Conv2d(6, 6, 3, 2, groups=6, bias=False),
        nn.Conv2d(6, 8, 3, padding=2, dilation=2),
        nn.ReLU(inplace=True),
        nn.AvgPool2d(3, 1, padding=1),
        nn.Conv2d(8, 4, 1),
        nn.Flatten(),
    )
    return lively(trunk.append(nn.Linear(trunk(torch.zeros(1, 3, 45, 53)).shape[1], 5)))


@pytest.mark.parametrize("threshold", [0.0, 0.5, 1.0])
def test_every_rule_at_borders_and_thresholds(threshold):
    torch.manual_seed(1)
    model = tiny_net()
    image = torch.rand(3, 45, 53)  # non-square, odd: ceil_mode pools and SAME padding hit the border
    tops = torch.tensor([-5, 0, 10, 38, 44, 20, -3])
    lefts = torch.tensor([0, 50, -6, 25, 46, 47, 30])
    for size in (1, 8, 13):
        logits, act = IncrementalOcclusion(model, image, "7", 2, threshold=threshold)(tops, lefts, size, (0.1, 0.5, 0.9))
        with torch.no_grad():
            xs = occluded(image, tops, lefts, size, (0.1, 0.5, 0.9))
            assert_close(logits, model(xs))
            assert_close(act, model[:8](xs)[:, 2])


def test_residual_blocks_union_patches():
    """A stride-2 downsample and a residual add whose operands' patches differ in size and place."""
    from torchvision.models.resnet import BasicBlock

    torch.manual_seed(2)
    downsample = nn.Sequential(nn.Conv2d(4, 8, 1, 2, bias=False), nn.BatchNorm2d(8))
    model = lively(nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), BasicBlock(4, 8, 2, downsample), BasicBlock(8, 8),
                                 nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 3)))
    # the global average dilutes a small occluder below the probabilities' tolerance: logits and maps
    check(model, torch.rand(3, 40, 40), "2", 1, 6, 7, threshold=0.9, probabilities=False)


def test_unknown_layer_warns_once_and_stays_exact():
    torch.manual_seed(3)
    model = lively(nn.Sequential(nn.Conv2d(3, 4, 3), nn.GELU(), nn.Conv2d(4, 4, 3), nn.Flatten(), nn.Linear(4 * 28 * 28, 3)))
    with pytest.warns(UserWarning, match=r"no rule for layer '1' \(GELU\)") as record:
        check(model, torch.rand(3, 32, 32), "2", 0, 5, 9)
    assert len(record) == 1


def test_unknown_layer_name_lists_valid_ones():
    model = build_model("zfnet", input_size=64)
    with pytest.raises(KeyError, match="(?i)valid layer names: conv1"):
        IncrementalOcclusion(model, torch.rand(3, 64, 64), "conv9")


def test_multiply_adds_are_counted_analytically():
    model = nn.Sequential(nn.Conv2d(3, 4, 3, stride=2, padding=1), nn.ReLU(), nn.Conv2d(4, 6, 3, groups=2),
                          nn.Flatten(), nn.Linear(6 * 14 * 14, 5)).eval()
    conv1, conv2, fc = 16 * 16 * 4 * 3 * 9, 14 * 14 * 6 * 2 * 9, 6 * 14 * 14 * 5
    assert forward_macs(model, 32) == conv1 + conv2 + fc
    engine = IncrementalOcclusion(model, torch.rand(3, 32, 32), threshold=1.0)
    engine(torch.tensor([0, 20]), torch.tensor([12, 26]), 4, 0.0)
    # a 4-pixel occluder changes a 3x3 window of conv1 and a 5x5 window of conv2, per position
    assert engine.macs == 2 * (3 * 3 * 4 * 3 * 9 + 5 * 5 * 6 * 2 * 9 + fc)


def test_approximate_mode_trades_exactness_for_multiply_adds():
    torch.manual_seed(4)
    layers = []
    for i in range(6):  # a small VGG: the projective field outgrows a 48-pixel map
        layers += [nn.Conv2d(3 if i == 0 else 8, 8, 3, padding=1), nn.ReLU()] + [nn.MaxPool2d(2)] * (i % 2)
    model = lively(nn.Sequential(*layers, nn.Flatten(), nn.Linear(8 * 6 * 6, 4)))
    image = torch.rand(3, 48, 48)
    tops, lefts = grid(48, 8, 4)
    exact = IncrementalOcclusion(model, image, threshold=1.0)
    target = exact(tops, lefts, 8, 0.5)[0].softmax(1)[:, 0]
    macs, errors = [], []
    for tau in (1.0, 0.5, 0.3):
        engine = IncrementalOcclusion(model, image, threshold=1.0, approximate=tau)
        approx = engine(tops, lefts, 8, 0.5)[0].softmax(1)[:, 0]
        macs.append(engine.macs)
        errors.append((approx - target).abs().mean().item())
        if tau == 0.5:
            assert torch.corrcoef(torch.stack([approx, target]))[0, 1] > 0.8  # an approximation, not noise
    assert macs[0] == exact.macs and errors[0] < 1e-6  # a threshold of the whole map changes nothing
    assert macs[0] > macs[1] > macs[2] and 0 < errors[1] < errors[2]
    with pytest.raises(ValueError, match="fraction"):
        IncrementalOcclusion(model, image, approximate=1.5)


@pytest.mark.parametrize("name, layer", [("alexnet", "conv5"), ("resnet18", "fc")])
def test_occlusion_map_incremental_flag_gives_the_same_maps(name, layer):
    from cnnvis.occlusion import occlusion_map

    torch.manual_seed(5)
    model = lively(build_model(name, num_classes=10, input_size=72))
    image = torch.rand(3, 72, 72)
    full = occlusion_map(model, image, layer, size=20, stride=13, batch_size=9, fill=0.3)
    fast = occlusion_map(model, image, layer, size=20, stride=13, batch_size=9, fill=0.3, incremental=True)
    assert (full.engine, fast.engine) == ("full", "incremental") and fast.channel == full.channel
    for ours, ref in [(fast.probability, full.probability), (fast.activation, full.activation)]:
        assert_close(ours.flatten()[:, None], ref.flatten()[:, None])
    # each engine's top class may be either of two near-equal classes: both are checked against plain forwards
    tops, lefts = torch.cartesian_prod(full.ys, full.xs).T
    with torch.no_grad():
        logits = model(occluded(image, tops, lefts, 20, 0.3)).view(*full.top_class.shape, -1)
    assert_argmax_up_to_ties(full.top_class, logits)
    assert_argmax_up_to_ties(fast.top_class, logits)
