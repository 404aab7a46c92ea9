"""Receptive fields: ZFNet against a hand table; EfficientNet-Lite0 and ResNet18 against the empirical
support of the input gradient of a linearized copy with positive weights."""

import pytest
import torch
from torch import nn

from cnnvis.models import build_model, zfnet
from cnnvis.receptive_field import crop_patch, geometry, receptive_field

# Zeiler & Fergus Fig. 3 at 224: by hand from (kernel, stride, pad) 7/2/1, pool 3/2/1, 5/2/0, pool 3/2/1,
# 3/1/1 x3, pool 3/2/0. Field F' = F + (k-1) J, jump J' = s J, first unit's first row lo' = lo - p J.
ZFNET_TABLE = {  # layer: (field, jump, first unit's rows (lo, hi) before clipping, map size)
    "conv1": (7, 2, (-1, 5), 110),
    "pool1": (11, 4, (-3, 7), 55),
    "conv2": (27, 8, (-3, 23), 26),
    "pool2": (43, 16, (-11, 31), 13),
    "conv3": (75, 16, (-27, 47), 13),
    "conv4": (107, 16, (-43, 63), 13),
    "conv5": (139, 16, (-59, 79), 13),
    "pool5": (171, 32, (-59, 111), 6),
}


ZF = zfnet(fc_widths=(8, 8))  # the conv geometry of ZFNet; small fc layers build fast


@pytest.mark.parametrize("layer", list(ZFNET_TABLE))
def test_zfnet_matches_the_hand_table(layer):
    field, jump, (lo, hi), size = ZFNET_TABLE[layer]
    g = geometry(ZF, layer, 224)
    assert g.field == (field, field) and g.stride == (jump, jump) and g.rows.size == size
    assert receptive_field(ZF, layer, 0, 0) == (max(lo, 0), hi + 1, max(lo, 0), hi + 1)
    y, x = size // 2, size - 1
    assert receptive_field(ZF, layer, y, x) == (
        max(y * jump + lo, 0), min(y * jump + hi + 1, 224), max(x * jump + lo, 0), min(x * jump + hi + 1, 224))


def linearized(model):
    """Rectifiers removed, every weight positive: the input gradient of a unit is nonzero exactly on its field."""
    for name, module in list(model.named_modules()):
        for child_name, child in module.named_children():
            if isinstance(child, (nn.ReLU, nn.ReLU6)):
                setattr(module, child_name, nn.Identity())
        if isinstance(module, nn.Conv2d):
            module.weight.data = module.weight.data.abs() + 0.01
    return model.eval()


def gradient_support(model, layer, y, x, size):
    from cnnvis.hooks import forward_recorded, record_activations

    inp = torch.rand(1, 3, size, size, requires_grad=True)
    with record_activations(model, layer, stop_early=True, detach=False) as store:
        forward_recorded(model, inp, store)
        store[layer][0, :, y, x].sum().backward()
    rows = inp.grad[0].abs().sum(0).sum(1).nonzero().flatten()
    cols = inp.grad[0].abs().sum(0).sum(0).nonzero().flatten()
    return int(rows.min()), int(rows.max()) + 1, int(cols.min()), int(cols.max()) + 1


@pytest.mark.parametrize("name, layers", [
    ("efficientnet_lite0", ["stem", "stage2", "stage3", "stage4"]), ("resnet18", ["pool1", "layer2"])])
def test_matches_the_gradient_support(name, layers):
    torch.manual_seed(0)
    size = 80  # even: TF 'SAME' padding is asymmetric
    model = linearized(build_model(name, pretrained=False, input_size=size))
    for layer in layers:
        g = geometry(model, layer, size)
        n = g.rows.size
        for y, x in [(0, 0), (n - 1, n - 1), (n // 2, 1)]:
            assert g.box(y, x) == gradient_support(model, layer, y, x, size), (layer, y, x)


def test_same_padding_is_asymmetric():
    # TF 'SAME' 3x3/2 on an even size pads 0 before and 1 after: the first stem unit sees rows 0..2
    model = build_model("efficientnet_lite0", pretrained=False)
    assert geometry(model, "stem", 224).rows.lo == 0 and geometry(model, "stem", 225).rows.lo == -1


def test_crop_patch_and_errors():
    image = torch.arange(3 * 10 * 10.0).view(3, 10, 10)
    assert torch.equal(crop_patch(image, (2, 5, 1, 4)), image[:, 2:5, 1:4])
    with pytest.raises(IndexError, match="13x13"):
        receptive_field(ZF, "conv5", 13, 0)
    with pytest.raises(KeyError, match="(?i)valid layer names"):
        receptive_field(ZF, "conv9", 0, 0)
    assert receptive_field(ZF, "fc6", 0, 0) == (0, 224, 0, 224)  # after flattening: the whole image
