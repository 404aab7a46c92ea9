"""Grad-CAM, Grad-CAM++, LayerCAM and Score-CAM on torchvision's ViT and Swin through the ``reshape`` hook: equal
to pytorch-grad-cam on the same model, layer, target and reshape (small configs of the same classes; one test on
the real vit_b_16 / swin_t architectures)."""

import functools

import pytest
import torch
from torch import nn
from torchvision.models import SwinTransformer, VisionTransformer

from cnnvis import cams, reshapes
from cnnvis.models import build_model, get_layer, swin_classifier, vit_classifier, weights_description
from test_cams import assert_nontrivial

SIZE = 32
TARGETS = [1, 3]
METHODS = ["GradCAM", "GradCAMPlusPlus", "LayerCAM", "ScoreCAM"]


def informative_head(model):
    """torchvision initializes ViT's head to zero (and Swin's near zero), which makes every map constant."""
    torch.manual_seed(1)
    nn.init.normal_(model.head.weight)
    return model.eval()


@pytest.fixture(scope="module")
def small_vit():
    torch.manual_seed(0)
    net = VisionTransformer(image_size=SIZE, patch_size=8, num_layers=2, num_heads=2, hidden_dim=16, mlp_dim=32,
                            num_classes=5)
    return informative_head(vit_classifier(net, SIZE))


@pytest.fixture(scope="module")
def small_swin():
    torch.manual_seed(0)
    net = SwinTransformer(patch_size=[4, 4], embed_dim=16, depths=[1, 1], num_heads=[1, 2], window_size=[2, 2],
                          num_classes=5)
    return informative_head(swin_classifier(net, SIZE))


@pytest.fixture(scope="module")
def images():
    torch.manual_seed(2)
    return torch.rand(2, 3, SIZE, SIZE)


def peer_map(method, model, layer, x, targets, reshape_transform):
    import pytorch_grad_cam
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    with getattr(pytorch_grad_cam, method)(model, [get_layer(model, layer)], reshape_transform=reshape_transform) as peer:
        return torch.from_numpy(peer(x, [ClassifierOutputTarget(t) for t in targets]))


def swin_peer_reshape(tokens):
    return tokens.permute(0, 3, 1, 2)  # torchvision's Swin is channels last; pytorch-grad-cam's own is for timm


@pytest.mark.parametrize("method", METHODS)
def test_vit_maps_equal_pytorch_grad_cam(small_vit, images, method):
    from pytorch_grad_cam.utils.reshape_transforms import vit_reshape_transform

    layer = small_vit.roles["last_conv"]
    with getattr(cams, method)(small_vit, layer) as ours:  # the reshape comes from model.cam_reshape
        mine = cams.normalize_maps(ours.attribute(images, TARGETS))
    theirs = peer_map(method, small_vit, layer, images, TARGETS, functools.partial(vit_reshape_transform, height=4, width=4))
    assert mine.shape == theirs.shape == (2, SIZE, SIZE)
    assert_nontrivial(theirs)
    torch.testing.assert_close(mine, theirs, atol=1e-5, rtol=0)


@pytest.mark.parametrize("method", METHODS)
def test_swin_maps_equal_pytorch_grad_cam(small_swin, images, method):
    layer = small_swin.roles["last_conv"]
    with getattr(cams, method)(small_swin, layer) as ours:
        mine = cams.normalize_maps(ours.attribute(images, TARGETS))
    theirs = peer_map(method, small_swin, layer, images, TARGETS, swin_peer_reshape)
    assert_nontrivial(theirs)
    torch.testing.assert_close(mine, theirs, atol=1e-5, rtol=0)


def test_reshapes_put_each_token_at_its_grid_position():
    """Against a naive loop: token 1 + i*w + j of a ViT is position (i, j); Swin's (n, i, j, c) is (n, c, i, j)."""
    tokens = torch.randn(2, 1 + 3 * 3, 5)
    maps = reshapes.vit_reshape(tokens)
    assert maps.shape == (2, 5, 3, 3)
    for i in range(3):
        for j in range(3):
            assert torch.equal(maps[:, :, i, j], tokens[:, 1 + i * 3 + j])
    nhwc = torch.randn(2, 3, 4, 5)
    assert torch.equal(reshapes.swin_reshape(nhwc)[1, 4, 2, 3], nhwc[1, 2, 3, 4])
    with pytest.raises(ValueError, match="square grid"):
        reshapes.vit_reshape(torch.randn(1, 1 + 6, 5))


def test_an_explicit_reshape_wins_over_the_models():
    """``reshape=`` replaces ``model.cam_reshape``: the identity on ViT tokens is not a map and says so."""
    model = informative_head(vit_classifier(VisionTransformer(image_size=SIZE, patch_size=8, num_layers=1, num_heads=1,
                                                              hidden_dim=8, mlp_dim=8, num_classes=3), SIZE))
    with cams.GradCAM(model, "last_norm1", reshape=lambda t: t) as method, pytest.raises(IndexError):
        method.attribute(torch.rand(1, 3, SIZE, SIZE), 0)


@pytest.mark.parametrize("name, size, grid", [("vit_b_16", 48, 3), ("swin_t", 64, 2)])
def test_real_architectures_equal_pytorch_grad_cam(name, size, grid):
    from pytorch_grad_cam.utils.reshape_transforms import vit_reshape_transform

    torch.manual_seed(0)
    model = informative_head(build_model(name, pretrained=False, input_size=size))
    assert model.weights_source.startswith("random init") and model.task == "classification"
    x = torch.rand(1, 3, size, size)
    layer = model.roles["last_conv"]
    peer_reshape = (functools.partial(vit_reshape_transform, height=grid, width=grid) if name == "vit_b_16"
                    else swin_peer_reshape)
    with cams.GradCAM(model, layer) as method:
        assert method.attribute(x, 5, upsample_to_input=False).shape == (1, grid, grid)
        mine = cams.normalize_maps(method.attribute(x, 5))
    theirs = peer_map("GradCAM", model, layer, x, [5], peer_reshape)
    assert_nontrivial(theirs)
    torch.testing.assert_close(mine, theirs, atol=1e-5, rtol=0)


BEYOND = ["vit_b_16", "swin_t", "fasterrcnn_mobilenet_v3_large_fpn", "deeplabv3_mobilenet_v3_large", "fcn_resnet50"]


@pytest.mark.parametrize("name", BEYOND)
def test_every_new_model_declares_the_cam_interface(name):
    model = build_model(name, pretrained=False)
    assert model.task in {"classification", "detection", "segmentation"} and model.weights_source.startswith("random init")
    for layer in [model.roles["last_conv"], *model.roles["layercam"], *model.layers]:
        assert get_layer(model, layer) is not None
    assert (model.cam_reshape is None) == (model.task == "segmentation")


def fake_cached_weights(torch_home, name, weights_name, state):
    """A torch hub cache file of ``state`` where torchvision's ``weights_name`` for ``name`` would be."""
    import os

    import torchvision

    url = torchvision.models.get_model_weights(name)[weights_name].url
    file = torch_home / "hub" / "checkpoints" / os.path.basename(url)
    file.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, file)
    return file


def test_cached_weights_load_and_a_missing_file_is_named(tmp_path, monkeypatch):
    import torchvision

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr("torchvision.models._api.WeightsEnum.get_state_dict",
                        lambda self, *a, **k: (_ for _ in ()).throw(OSError("no network")))
    name = "deeplabv3_mobilenet_v3_large"
    assert build_model(name, input_size=SIZE).weights_source == "random init"  # library default, nothing cached
    with pytest.raises(FileNotFoundError, match=r"deeplabv3_mobilenet_v3_large-fc3c493d\.pth.*checkpoints"):
        build_model(name, pretrained=True)
    with pytest.raises(FileNotFoundError, match=r"vit_b_16-c867db91\.pth.*checkpoints"):
        build_model("vit_b_16", pretrained=True)
    shapes = {k: v.shape for k, v in torchvision.models.segmentation.deeplabv3_mobilenet_v3_large(
        weights=None, weights_backbone=None, aux_loss=True).state_dict().items()}
    # a distinct constant per tensor, stored as one element each (expand shares it): a tiny file
    state = {k: torch.tensor(float(i)) if not shape else torch.full((1,), float(i)).expand(shape)
             for i, (k, shape) in enumerate(shapes.items())}
    fake_cached_weights(tmp_path, name, "COCO_WITH_VOC_LABELS_V1", state)
    for pretrained in (None, True):
        model = build_model(name, pretrained=pretrained, input_size=SIZE)
        assert model.weights_source == "COCO-VOC weights (torchvision COCO_WITH_VOC_LABELS_V1)"
        loaded = {k: v for k, v in model.state_dict().items() if not k.startswith("normalize.")}
        assert all(torch.equal(v, state[k].expand_as(v).to(v.dtype)) for k, v in loaded.items())
    assert weights_description(name, True) == "COCO-VOC weights (torchvision COCO_WITH_VOC_LABELS_V1)"
    with pytest.raises(ValueError, match="model.num_classes=21"):
        build_model(name, num_classes=5, pretrained=True)
    assert build_model(name, num_classes=5).weights_source == "random init"  # a new class count: no weights fit


def test_cam_is_exact_on_swins_last_norm_and_refused_on_vit_tokens(small_swin, small_vit, images):
    """Swin's last norm feeds global average pooling + the head: through the reshape, CAM = h w Grad-CAM there.
    ViT's head reads the class token, not pooled patches: CAM says so."""
    with cams.CAM(small_swin, "norm") as cam, cams.GradCAM(small_swin, "norm", relu=False) as grad_cam:
        a = cam.attribute(images, TARGETS, upsample_to_input=False)
        b = grad_cam.attribute(images, TARGETS, upsample_to_input=False)
    torch.testing.assert_close(a, b * a.shape[-1] * a.shape[-2], atol=1e-4, rtol=1e-4)
    with cams.CAM(small_vit, "last_norm1") as cam, pytest.raises(ValueError, match="use GradCAM"):
        cam.attribute(images, TARGETS)


@pytest.mark.parametrize("model_name", ["small_vit", "small_swin"])
def test_layercam_fuses_the_layercam_role(model_name, images, request):
    model = request.getfixturevalue(model_name)
    with cams.LayerCAM(model, model.roles["layercam"]) as method:
        fused = method.attribute(images, TARGETS)
    assert fused.shape == (2, SIZE, SIZE) and fused.flatten(1).amax(1).min() > 0
