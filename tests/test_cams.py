"""CAM family and gradient attributions: equal to pytorch-grad-cam / Captum / TorchCAM on the same model,
layer and target; CAM == Grad-CAM up to a positive scale on a GAP + linear head; hooks always released."""

import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from cnnvis import cams
from cnnvis.claims import ANSWERS, NOT_COMPARABLE, UNINFORMATIVE
from cnnvis.models import alexnet, build_model, get_layer
from conftest import needs_caltech101, needs_imagenet_val, run_py

SIZE = 96


@pytest.fixture(scope="module")
def lite0():
    return build_model("efficientnet_lite0", pretrained=True, input_size=SIZE).eval()


@pytest.fixture(scope="module")
def images():
    """Two real photos (a cat, a cup) at SIZE x SIZE in [0, 1]."""
    import skimage.data
    from PIL import Image

    photos = [skimage.data.chelsea(), skimage.data.coffee()]
    arrays = [np.asarray(Image.fromarray(p).resize((SIZE, SIZE), Image.BILINEAR)) for p in photos]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float() / 255


@pytest.fixture(scope="module")
def relu_net():
    torch.manual_seed(0)
    return alexnet(num_classes=10, input_size=SIZE).eval()


TARGETS = [281, 968]  # tabby cat, cup


def peer_map(peer_cls, model, layer, x, targets):
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    with peer_cls(model, [get_layer(model, layer)]) as peer:
        return torch.from_numpy(peer(x, [ClassifierOutputTarget(t) for t in targets]))


def assert_nontrivial(maps):
    assert maps.flatten(1).std(1).min() > 0.05  # a real map, not a constant both sides agree on


@pytest.mark.parametrize("ours, peer, layer", [
    ("GradCAM", "GradCAM", "head"),
    ("GradCAM", "GradCAM", "stage4"),
    ("GradCAMPlusPlus", "GradCAMPlusPlus", "head"),
    ("LayerCAM", "LayerCAM", "head"),
    ("LayerCAM", "LayerCAM", "stage2"),  # a shallow layer: the case LayerCAM was made for
    ("ScoreCAM", "ScoreCAM", "stage1"),  # 16 channels: quick
])
def test_equals_pytorch_grad_cam(lite0, images, ours, peer, layer):
    import pytorch_grad_cam

    with getattr(cams, ours)(lite0, layer) as method:
        mine = cams.normalize_maps(method.attribute(images, TARGETS))
    theirs = peer_map(getattr(pytorch_grad_cam, peer), lite0, layer, images, TARGETS)
    assert mine.shape == theirs.shape == (2, SIZE, SIZE)
    assert_nontrivial(theirs)
    torch.testing.assert_close(mine, theirs, atol=1e-5, rtol=0)


def test_scorecam_batching_and_black_image_sharing_change_nothing(lite0, images):
    """Batch size 5 (ragged) vs 64, and vs a naive loop: one masked image per forward pass, no sharing."""
    layer = "stage1"
    with cams.ScoreCAM(lite0, layer, batch_size=5, relu=False) as a, cams.ScoreCAM(lite0, layer, batch_size=64, relu=False) as b:
        m5, m64 = a.attribute(images[:1], TARGETS[0], False), b.attribute(images[:1], TARGETS[0], False)
    torch.testing.assert_close(m5, m64, atol=1e-5 * float(m64.abs().max()), rtol=1e-4)  # float sums differ by batch
    with torch.no_grad():
        acts = cams.Attribution(lite0, layer)
        lite0(images[:1])
        A = acts.activations[layer]
        acts.close()
        up = F.interpolate(A, size=(SIZE, SIZE), mode="bilinear", align_corners=True)[0]
        scores = []
        for k in range(A.shape[1]):
            mask = (up[k] - up[k].min()) / (up[k].max() - up[k].min() + 1e-8)
            scores.append(lite0(images[:1] * mask)[0, TARGETS[0]])
        naive = (torch.softmax(torch.stack(scores), 0)[:, None, None] * A[0]).sum(0)
    torch.testing.assert_close(m64[0], naive, atol=1e-5, rtol=1e-4)


def test_layercam_fuses_layers_like_its_paper(lite0, images):
    """tanh(2 M / max M) per layer, upsampled, element-wise max; checked against TorchCAM's fuse_cams."""
    from torchcam.methods import LayerCAM as TorchLayerCAM

    layers = ["stage3", "stage5", "head"]
    with cams.LayerCAM(lite0, layers) as method:
        fused = method.attribute(images, TARGETS)
    with TorchLayerCAM(lite0, [get_layer(lite0, n) for n in layers], input_shape=(3, SIZE, SIZE)) as extractor:
        raw = extractor(class_idx=TARGETS, scores=lite0(images), normalized=False)
        by_max = [m / m.flatten(1).amax(1)[:, None, None] for m in raw]
        theirs = TorchLayerCAM.fuse_cams(by_max, target_shape=(SIZE, SIZE))
    assert (fused.flatten(1).amax(1) - fused.flatten(1).amin(1)).min() > 0.05  # tanh saturates: a range, not a spread
    torch.testing.assert_close(fused, theirs, atol=1e-5, rtol=0)


def test_cam_equals_gradcam_up_to_a_positive_scale_on_a_gap_linear_head(lite0, images):
    """EfficientNet-Lite0's head feeds global average pooling + fc: dy/dA = w / (h w), so CAM = h w Grad-CAM."""
    with cams.CAM(lite0, "head") as cam, cams.GradCAM(lite0, "head", relu=False) as grad_cam:
        a = cam.attribute(images, TARGETS, upsample_to_input=False)
        b = grad_cam.attribute(images, TARGETS, upsample_to_input=False)
    hw = a.shape[-1] * a.shape[-2]
    torch.testing.assert_close(a, b * hw, atol=1e-4, rtol=1e-4)
    assert (a * b).sum() > 0


def test_cam_refuses_layers_that_do_not_feed_gap_and_linear(lite0, relu_net, images):
    with cams.CAM(lite0, "stage7") as cam, pytest.raises(ValueError, match="GradCAM"):
        cam.attribute(images, TARGETS)
    with cams.CAM(relu_net, "conv5") as cam, pytest.raises(ValueError, match="gap_network"):
        cam.attribute(images, 1)


def plain_gradient(model, x, targets):
    xg = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(model(xg).gather(1, torch.tensor(targets)[:, None]).sum(), xg)
    return grad


def _captum(name, model, x, target):
    import captum.attr

    return getattr(captum.attr, name)(model).attribute(x.clone().requires_grad_(True), target=target)


@pytest.mark.parametrize("ours, theirs", [("GuidedBackprop", "GuidedBackprop"), ("Deconvnet", "Deconvolution")])
def test_input_space_rules_equal_captum_on_a_relu_network(relu_net, images, ours, theirs):
    targets = [3, 7]
    with getattr(cams, ours)(relu_net) as method:
        mine = method.attribute(images, targets)
    other = _captum(theirs, relu_net, images, targets)
    plain = plain_gradient(relu_net, images, targets)
    assert mine.abs().max() > 0 and not torch.allclose(mine, plain, atol=1e-6)
    torch.testing.assert_close(mine, other, atol=1e-5, rtol=1e-4)


def test_saliency_is_simonyans_max_abs_gradient(relu_net, images):
    import captum.attr

    with cams.Saliency(relu_net) as method:
        mine = method.attribute(images, [3, 7])
    theirs = captum.attr.Saliency(relu_net).attribute(images.clone().requires_grad_(True), target=[3, 7], abs=True)
    torch.testing.assert_close(mine, theirs.amax(1), atol=1e-6, rtol=1e-5)


def test_guided_backprop_holds_at_relu6_where_captum_falls_back_to_the_gradient(lite0, images):
    """EfficientNet-Lite0 has only ReLU6: Captum's guided backprop there is the plain gradient; ours is not."""
    x, t = images[:1], TARGETS[:1]
    captum_guided = _captum("GuidedBackprop", lite0, x, t)
    gradient = plain_gradient(lite0, x, t)
    torch.testing.assert_close(captum_guided, gradient)  # the peer's silent fallback
    with cams.GuidedBackprop(lite0) as method:
        ours = method.attribute(x, t)
    assert (ours - gradient).abs().max() > 10 * gradient.abs().max() * 1e-3


class FunctionalNet(nn.Module):
    """conv -> F.relu -> conv -> torch.relu -> GAP -> linear: rectifiers no module hook can see."""

    def __init__(self):
        super().__init__()
        self.c1, self.c2, self.fc = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 5, 3, padding=1), nn.Linear(5, 3)
        self.layers = {"conv2": "c2"}

    def forward(self, x):
        h = torch.relu(self.c2(F.relu(self.c1(x))))
        return self.fc(h.mean((2, 3)))


def test_guided_backprop_holds_at_functional_relu():
    """Against the rule written out by hand: grad_in = relu(grad_out) * (input > 0) at each rectifier."""
    torch.manual_seed(1)
    net = FunctionalNet().eval()
    x = torch.rand(2, 3, 8, 8)
    with cams.GuidedBackprop(net) as method:
        ours = method.attribute(x, 2)
    xg = x.clone().requires_grad_(True)
    z1 = net.c1(xg)
    h1 = z1.clamp(min=0)
    z2 = net.c2(h1)
    h2 = z2.clamp(min=0)
    g_h2 = torch.autograd.grad(net.fc(h2.mean((2, 3)))[:, 2].sum(), h2, retain_graph=True)[0]
    g_z2 = g_h2.clamp(min=0) * (z2 > 0)
    g_h1 = torch.autograd.grad(z2, h1, g_z2, retain_graph=True)[0]
    g_z1 = g_h1.clamp(min=0) * (z1 > 0)
    expected = torch.autograd.grad(z1, xg, g_z1)[0]
    torch.testing.assert_close(ours, expected)


def test_guided_gradcam_is_guided_backprop_times_normalized_gradcam(relu_net, images):
    with cams.GuidedGradCAM(relu_net, "conv4") as ggc, cams.GuidedBackprop(relu_net) as gb, cams.GradCAM(relu_net, "conv4") as gc:
        out = ggc.attribute(images, [3, 7])
        expected = gb.attribute(images, [3, 7]) * cams.normalize_maps(gc.attribute(images, [3, 7]))[:, None]
    torch.testing.assert_close(out, expected)
    assert out.shape == images.shape


def test_batching_and_default_targets(lite0, images):
    with cams.GradCAM(lite0, "stage6", batch_size=1) as one, cams.GradCAM(lite0, "stage6", batch_size=8) as many:
        top1 = lite0(images).argmax(1)
        a, b = one.attribute(images), many.attribute(images, top1.tolist())
    torch.testing.assert_close(a, b, atol=1e-5 * float(b.abs().max()), rtol=1e-4)  # float sums differ by batch


def test_graph_from_the_hooked_layer_on_gives_the_full_graphs_gradients():
    """The trunk runs without a graph; the hook starts one. Same weights as a full-graph gradient, an in-place
    ReLU right after the hooked conv leaves the recorded activation alone, and grad mode comes back as it was."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(inplace=True), nn.Conv2d(8, 6, 3, padding=1),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 4)).eval()
    x = torch.randn(3, 3, 12, 12)
    targets = torch.tensor([0, 3, 1])
    a = model[0](x).detach()  # the conv's output, before the in-place ReLU
    a_leaf = a.clone().requires_grad_(True)
    scores = model[2:](F.relu(a_leaf))[torch.arange(3), targets]  # the graph above the conv, by hand
    (expected,) = torch.autograd.grad(scores.sum(), a_leaf)
    with cams.GradCAM(model, "0", relu=False) as method:
        acts, grads, got_scores, _ = method._scores_and_grads(x, targets)
        cam = method.attribute(x, [0, 3, 1], upsample_to_input=False)
    torch.testing.assert_close(acts[0], a)  # recorded before the in-place ReLU, not overwritten by it
    torch.testing.assert_close(grads[0], expected)
    torch.testing.assert_close(got_scores, scores.detach())
    torch.testing.assert_close(cam, (expected.mean((2, 3))[:, :, None, None] * a).sum(1))
    assert torch.is_grad_enabled()
    with torch.no_grad():
        method = cams.GradCAM(model, "0")
        method.attribute(x, 0)
        assert not torch.is_grad_enabled()
        method.close()


def test_hooks_are_released_on_exit_and_on_error(lite0, images):
    layer = get_layer(lite0, "head")
    before = len(layer._forward_hooks)
    with pytest.raises(ValueError, match="one per image"):
        with cams.GradCAM(lite0, "head") as method:
            assert len(layer._forward_hooks) == before + 1
            method.attribute(images, [1, 2, 3])
    assert len(layer._forward_hooks) == before
    with pytest.raises(RuntimeError, match="closed"):
        method.attribute(images, 1)


def test_bad_input_names_the_fix(lite0, images):
    with pytest.raises(KeyError, match="stage7"):
        cams.GradCAM(lite0, "stage9")
    with pytest.raises(KeyError, match="available"):
        cams.make_method("gradcam+++", lite0, "head")
    lite0.train()
    try:
        with cams.GradCAM(lite0, "head") as method, pytest.raises(ValueError, match="eval"):
            method.attribute(images, 1)
    finally:
        lite0.eval()


@needs_imagenet_val
@needs_caltech101
def test_cam_methods_end_to_end(tmp_path):
    result = run_py("experiment=cam_methods", "smoke=true", "model.input_size=64", f"results_dir={tmp_path}",
                    "experiment.methods=[cam,gradcam,guided_backprop,layercam_fused]", "experiment.layer=head")
    assert result.returncode == 0, result.stderr[-3000:]
    out = tmp_path / "cam_methods"
    for name in ("imagenet", "caltech101"):
        assert (out / f"{name}_grid.png").stat().st_size > 1000
    for figure in ("imagenet_class_pair", "imagenet_cam_top5"):  # Grad-CAM Fig. 1, CAM Fig. 4
        assert (out / f"{figure}.png").stat().st_size > 1000
        table = pd.read_csv(out / f"{name}_metrics.csv")
        assert list(table["method"])[:4] == ["cam", "gradcam", "guided_backprop", "layercam_fused"]
        assert "baseline: centre point" in set(table["method"])
        scored = table[table["average_drop"] != "-"]  # the box-only baselines have no faithfulness scores
        value = lambda cells: cells.str.split().str[0].astype(float)  # "mean [lo, hi] (n = k)"
        assert value(scored["average_drop"]).between(0, 100).all() and scored["average_drop"].str.contains("n = ").all()
        assert value(scored["insertion_auc"]).between(0, 1).all() and len(scored) == 5
    caltech = pd.read_csv(out / "caltech101_metrics.csv").set_index("method")
    assert caltech.loc["guided_backprop", "loc_err_15"] == "not comparable"
    assert caltech.loc[["cam", "baseline: full image", "baseline: centre box"], "loc_err_15"].str.contains("n = ").all()
    assert caltech["paper_loc_err_15"].notna().any()
    claims = pd.read_csv(out / "claims.csv", keep_default_na=False).set_index("claim")
    assert set(claims["verdict"]) <= {*ANSWERS, UNINFORMATIVE} and len(claims) > 0
    assert (out / "claims_evidence.npz").is_file()
    # gradcam++ and scorecam are not in this run: their comparisons cannot be made, and say so
    wang = claims.loc["scorecam has a lower Average Drop than gradcam and gradcam++ [imagenet]"]
    assert wang["verdict"] == NOT_COMPARABLE and "scorecam" in wang["reason"]
    # the random-weights control ran the localization claims on the same architecture
    cam = claims.loc["cam's box localizes the object (error % at IoU < 0.5) [caltech101]"]
    assert "cam - centre box" in cam["random-weights control"] and cam["random-weights control"].endswith(")")


@pytest.mark.parametrize("span", [1.0, 1e-3, 1e-6, 1e-9, 1e-12])
def test_normalize_maps_reaches_one_at_every_scale(span):
    """A relative guard: a map of range 1e-12 reaches 1 as a map of range 1 does (an absolute 1e-7 gave 0.0099 at
    1e-9); at range 1 it is pytorch-grad-cam's scaling; an all-zero and a constant map stay 0."""
    from pytorch_grad_cam.utils.image import scale_cam_image

    torch.manual_seed(0)
    unit = torch.rand(2, 5, 7)
    unit = (unit - unit.amin((1, 2), keepdim=True)) / (unit.amax((1, 2), keepdim=True) - unit.amin((1, 2), keepdim=True))
    scaled = cams.normalize_maps(unit * span)
    torch.testing.assert_close(scaled, unit, atol=1e-6, rtol=0)
    peer = torch.from_numpy(scale_cam_image(unit.numpy()))
    torch.testing.assert_close(cams.normalize_maps(unit), peer, atol=1e-6, rtol=0)
    assert cams.normalize_maps(torch.zeros(1, 3, 3)).eq(0).all()
    assert cams.normalize_maps(torch.full((1, 3, 3), span)).eq(0).all()


def plus_plus_case(g):
    """Channels with activation sums S = -4, 4, -4 (constant 2x2 maps) and gradients g (a linear score): channel 0's
    denominator g^2 (2 + S g) is zero at g = 0.5."""
    from collections import OrderedDict

    net = nn.Sequential(OrderedDict(feat=nn.Identity(), flat=nn.Flatten(), fc=nn.Linear(12, 1, bias=False))).eval()
    net.fc.weight.data = torch.tensor(g)[:, None, None].expand(3, 2, 2).reshape(1, 12).clone()
    x = torch.tensor([-1.0, 1.0, -1.0])[None, :, None, None].expand(1, 3, 2, 2).clone()
    return net, x


def test_gradcam_plus_plus_warns_where_its_denominator_passes_through_zero():
    """g = 0.5 (1 -+ 1e-5) on either side of the zero: condition number 1e5, the warning names the layer and the
    share of channels, and a 2e-5 relative change of one gradient flips the sign of the whole map."""
    maps = []
    for g in (0.5 * (1 - 1e-5), 0.5 * (1 + 1e-5)):
        net, x = plus_plus_case([g, 0.5, 0.1])
        with cams.GradCAMPlusPlus(net, "feat", relu=False) as method, \
                pytest.warns(UserWarning, match=r"'feat': 1 of 3 channels \(33.3%\).*ill-conditioned"):
            maps.append(method.attribute(x, 0, upsample_to_input=False))
    assert (maps[0] * maps[1] < 0).all()
    well, x = plus_plus_case([0.1, 0.5, 0.1])  # S g = -0.4: far from -2
    with cams.GradCAMPlusPlus(well, "feat") as method, warnings.catch_warnings():
        warnings.simplefilter("error")
        method.attribute(x, 0)


def test_build_method_takes_each_method_by_its_experiment_name(relu_net):
    options = dict(layer="conv5", layercam_layers=["conv4", "conv5"], batch_size=3, scorecam_batch_size=2)
    for name in cams.ALL_METHODS:
        with cams.build_method(name, relu_net, **options) as method:
            if name == "layercam_fused":
                assert isinstance(method, cams.LayerCAM) and method.layers == ["conv4", "conv5"]
            else:
                assert isinstance(method, cams.METHODS[name])
            assert method.batch_size == (2 if name == "scorecam" else 3)


def test_maps_for_classes_explain_one_image_for_each_class_as_one_call_per_class_would(lite0, images):
    from cnnvis.cams import GradCAM, maps_for_classes

    found = maps_for_classes(lite0, images[0], TARGETS, ["gradcam", "guided_gradcam"], "head")
    assert found["gradcam"].shape == (2, SIZE, SIZE) and found["guided_gradcam"].shape == (2, 3, SIZE, SIZE)
    with GradCAM(lite0, "head") as gradcam:
        for k, target in enumerate(TARGETS):
            torch.testing.assert_close(found["gradcam"][k], gradcam.attribute(images[:1], target)[0])
    assert not torch.allclose(found["gradcam"][0], found["gradcam"][1])  # the two classes' maps differ
