"""The deconvnet: a hand computation, the receptive-field support, agreement of the switch-based and the
autograd projections, Captum's Deconvolution, and the rule at ReLU6 / functional relu."""

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from cnnvis.deconvnet import deconv_project, has_switches, switch_chain
from cnnvis.models import build_model, zfnet
from cnnvis.receptive_field import receptive_field


def test_one_conv_relu_pool_layer_by_hand():
    # conv 2x2 [[1,-1],[0,1]] on the 3x3 input -> [[4,-2],[-3,3]]; relu -> [[4,0],[0,3]]; 2x2 max-pool -> 4,
    # switch at (0,0). Deconvnet: unpool 4 to (0,0), rectify, filter with the transposed filter:
    # the input pixels under (0,0) get 4 * w.
    net = nn.Sequential(nn.Conv2d(1, 1, 2, bias=True), nn.ReLU(), nn.MaxPool2d(2, 1))
    net[0].weight.data = torch.tensor([[[[1.0, -1.0], [0.0, 1.0]]]])
    net[0].bias.data.zero_()
    x = torch.tensor([[[[1.0, 0.0, 2.0], [0.0, 3.0, 0.0], [1.0, 0.0, 0.0]]]])
    expected = torch.tensor([[[[4.0, -4.0, 0.0], [0.0, 4.0, 0.0], [0.0, 0.0, 0.0]]]])
    assert torch.equal(deconv_project(net, x, "2", 0, method="switches"), expected)
    # the bias shifts the forward pass, not the projection; the switch moves to the other maximum
    net[0].bias.data.fill_(-1.0)
    x[0, 0, 2, 2] = 2.0  # conv at (1,1) now 3 - 0 + 2 - 1 = 4 > 4 - 1 = 3 at (0,0)
    expected = torch.zeros(1, 1, 3, 3)
    expected[0, 0, 1:, 1:] = 4.0 * net[0].weight.data[0, 0]
    assert torch.equal(deconv_project(net, x, "2", 0, method="switches"), expected)


def test_rectification_of_the_backward_signal():
    # x=1 -> conv 1x1 to two channels (w 1, 1) -> relu (1, 1) -> conv 1x1 to one (w 2, -0.5) -> relu 1.5.
    # Deconvnet from 1.5: transposed filter gives (3, -0.75), rectified (3, 0), transposed filter 3.
    # (The plain gradient times the value would be 1.5 * (2 - 0.5) = 2.25.)
    net = nn.Sequential(nn.Conv2d(1, 2, 1, bias=False), nn.ReLU(), nn.Conv2d(2, 1, 1, bias=False), nn.ReLU())
    net[0].weight.data = torch.tensor([1.0, 1.0]).view(2, 1, 1, 1)
    net[2].weight.data = torch.tensor([2.0, -0.5]).view(1, 2, 1, 1)
    x = torch.ones(1, 1, 1, 1)
    for method in ["switches", "autograd"]:
        assert deconv_project(net, x, "3", 0, method=method).item() == 3.0


def test_projection_is_zero_outside_the_receptive_field():
    torch.manual_seed(0)
    model = zfnet(input_size=112, fc_widths=(8, 8)).eval()
    x = torch.rand(2, 3, 112, 112)
    for layer, loc in [("conv2", (5, 7)), ("conv3", (3, 2)), ("pool2", (5, 1))]:
        proj = deconv_project(model, x, layer, channel=3, location=loc)
        y0, y1, x0, x1 = receptive_field(model, layer, *loc, input_size=112)
        inside = torch.zeros_like(proj, dtype=torch.bool)
        inside[..., y0:y1, x0:x1] = True
        assert proj[~inside].abs().max() == 0
        assert proj[inside].abs().max() > 0


def tiny_vgg(act=nn.ReLU):
    return nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), act(), nn.MaxPool2d(3, 2, padding=1),
                         nn.Conv2d(6, 8, 3, padding=1), act(), nn.MaxPool2d(2, 2),
                         nn.Conv2d(8, 5, 3, padding=1), act())


def test_switches_equal_autograd_with_the_deconvnet_rule():
    torch.manual_seed(1)
    net, x = tiny_vgg().eval(), torch.rand(3, 3, 20, 20)
    assert switch_chain(net, "7") is not None
    for layer in ["1", "5", "7"]:
        a = deconv_project(net, x, layer, 2, method="switches")
        b = deconv_project(net, x, layer, 2, method="autograd")
        assert a.abs().max() > 0 and torch.allclose(a, b, atol=1e-6)
    # zfnet up to conv1 (before any normalization): both ways, with the input Normalize transposed
    model = zfnet(input_size=64, fc_widths=(8, 8)).eval()
    x = torch.rand(2, 3, 64, 64)
    assert switch_chain(model, "conv5") is not None  # conv / relu / pool / LRN all the way
    a = deconv_project(model, x, "conv1", 5, method="switches")
    assert torch.allclose(a, deconv_project(model, x, "conv1", 5, method="autograd"), atol=1e-6)


def test_equals_captum_deconvolution_for_one_neuron():
    from captum.attr import NeuronDeconvolution

    torch.manual_seed(2)
    net, x = tiny_vgg().eval(), torch.rand(2, 3, 20, 20)
    c, y, xx = 2, 1, 3
    ours = deconv_project(net, x, "7", c, location=(y, xx), method="switches")
    theirs = NeuronDeconvolution(net, net[7]).attribute(x, neuron_selector=(c, y, xx))
    value = net(x)[:, c, y, xx].view(-1, 1, 1, 1)  # ours starts from the activation's value, Captum from 1
    assert value.min() > 0 and torch.allclose(ours, value * theirs, atol=1e-6)


class Relu6Net(nn.Module):
    """tiny_vgg's layers with nn.ReLU6 and functional relu: the autograd path must rectify at each."""

    def __init__(self, source):
        super().__init__()
        self.body = source

    def forward(self, x):
        b = self.body
        x = b[2](F.relu6(b[0](x)))
        x = b[5](torch.relu(b[3](x)))
        return b[6](x)


def test_deconvnet_rule_holds_at_relu6_and_functional_relu():
    torch.manual_seed(3)
    net = tiny_vgg().eval()
    for m in net:  # small weights keep every activation below 6: the forward passes are identical
        if isinstance(m, nn.Conv2d):
            m.weight.data.mul_(0.5)
    x = torch.rand(2, 3, 20, 20)
    wrapped = Relu6Net(net).eval()
    assert net(x).max() < 6
    expected = deconv_project(net, x, "6", 1, method="switches")
    ours = deconv_project(wrapped, x, "body.6", 1)  # auto: not a switch chain, so autograd
    assert switch_chain(wrapped, "body.6") is None
    assert torch.allclose(ours, expected, atol=1e-6)
    # and on an nn.ReLU6 network (EfficientNet-Lite0): differs from the plain gradient projection
    model = build_model("efficientnet_lite0", pretrained=True, input_size=64).eval()
    x = torch.rand(1, 3, 64, 64)
    assert switch_chain(model, "stage3") is None  # BatchNorm, ReLU6, residual blocks: autograd
    proj = deconv_project(model, x, "stage3", 4)
    xg = x.clone().requires_grad_(True)
    from cnnvis.hooks import forward_recorded, record_activations

    with record_activations(model, "stage3", stop_early=True, detach=False) as store:
        forward_recorded(model, xg, store)
        act = store["stage3"][0, 4]
        act.flatten()[act.flatten().argmax()].backward()
    assert proj.abs().max() > 0 and not torch.allclose(proj / proj.abs().max(), xg.grad / xg.grad.abs().max(), atol=1e-3)


def test_bad_arguments_fail_clearly():
    net, x = tiny_vgg().eval(), torch.rand(1, 3, 20, 20)
    with pytest.raises(KeyError, match="(?i)valid layer names"):
        deconv_project(net, x, "conv9", 0)
    with pytest.raises(IndexError, match="5 channels"):
        deconv_project(net, x, "7", 9)
    with pytest.raises(ValueError, match="autograd"):
        deconv_project(Relu6Net(net), x, "body.6", 0, method="switches")
    with pytest.raises(IndexError, match="5x5"):
        deconv_project(net, x, "7", 0, location=(7, 0))


def test_zfnet_deconv_end_to_end(tmp_path):
    from conftest import run_py

    # a random-init ZFNet (the switch-based path) on the packaged sample photos
    result = run_py("experiment=zfnet_deconv", "smoke=true", "model=zfnet", "model.input_size=96",
                    "dataset=samples", f"results_dir={tmp_path}")
    assert result.returncode == 0, result.stderr[-3000:]
    out = tmp_path / "zfnet_deconv"
    assert (out / "conv1.png").stat().st_size > 1000 and (out / "conv5.png").stat().st_size > 1000
    assert "receptive field" in (out / "layers.md").read_text() and (out / "run.json").exists()


def per_seed_projection(model, x, layer):
    """Projections of one (channel, y, x) that fires in every image, each divided by its seed's value."""
    from cnnvis.hooks import activations

    act = activations(model, x, [layer])[layer]
    c, y, xx = [int(i) for i in torch.nonzero(act.amin(0) > 0.1)[0]]
    proj = deconv_project(model, x, layer, c, location=(y, xx))
    return proj / act[:, c, y, xx].view(-1, 1, 1, 1)


def test_projection_depends_on_the_image_only_through_max_pool_switches():
    torch.manual_seed(0)
    x = torch.rand(2, 3, 64, 64)
    lite0 = build_model("efficientnet_lite0", pretrained=True, input_size=64).eval()
    assert not has_switches(lite0, "stage4")
    with pytest.warns(UserWarning, match="does not depend on the image"):
        unit = per_seed_projection(lite0, x, "stage4")
    assert unit.abs().max() > 0
    # float rounding of the two images' passes only (1e-6 of the max at 2 threads, 2e-6 at 1); an image-dependent
    # projection would differ by a sizeable fraction of it
    torch.testing.assert_close(unit[0], unit[1], rtol=1e-4, atol=1e-5 * unit.abs().max().item())
    zf = zfnet(input_size=64, fc_widths=(8, 8)).eval()
    assert has_switches(zf, "conv2") and not has_switches(zf, "conv1")
    unit = per_seed_projection(zf, x, "conv2")
    assert (unit[0] - unit[1]).abs().max() > 0.1 * unit.abs().max()
    for net, layer in [(tiny_vgg(), "7"), (tiny_vgg(nn.ReLU6), "7")]:
        assert has_switches(net, layer)
        assert not has_switches(net, "1")


def test_cam_methods_deconvnet_map_is_one_map_per_class_on_efficientnet():
    # what the cam_methods tables say of their deconvnet row: on a switchless network the image does not enter
    from cnnvis.cams import make_method

    lite0 = build_model("efficientnet_lite0", pretrained=True, input_size=64).eval()
    torch.manual_seed(1)
    with make_method("deconvnet", lite0) as deconvnet:
        maps = deconvnet.attribute(torch.rand(2, 3, 64, 64), torch.tensor([5, 5]))
    assert maps.abs().max() > 0
    torch.testing.assert_close(maps[0], maps[1])  # the same map, up to rounding in each row of the batch
    assert not has_switches(lite0, "fc")
