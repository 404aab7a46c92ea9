"""The interface every network of the package has, and what any of them can have done to it.

Every model takes RGB images in [0, 1] (its input normalization is its first module, so occluders, projections and
optimized images all live in pixel space), is laid out as ``normalize -> features -> pool -> classifier``, and
names its layers in ``model.layers``: a readable name (``conv1``, ``stage3``, ``fc6``) maps to the module whose
output is that layer's (rectified) activation. ``model.roles`` names the layers that play the papers' parts
(``ROLE_MEANINGS``). Here too: the kinds of network, the error for a model a procedure cannot run, and the generic
edits (``frozen``, ``fold_batchnorm``, ``replace_head``).
"""

from __future__ import annotations

import copy

import torch
from torch import nn


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


# The kind of network each model name builds; each experiment says which kinds it takes (its MODEL_KINDS).
CNN, TRANSFORMER, DETECTOR, SEGMENTER = "CNN classifier", "transformer classifier", "detector", "segmenter"


class UnsupportedModelError(ValueError):
    """A model that a procedure cannot run, or an unknown model name: the user's choice, not a bug (``run.py``
    reports it in one line and exits with status 2)."""


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


def replace_head(model: ImageClassifier, num_classes: int) -> None:
    """A new, freshly initialized last linear layer for ``num_classes`` (the rest is kept)."""
    for name, module in model.classifier.named_children():
        if module is model.head:
            setattr(model.classifier, name, nn.Linear(module.in_features, num_classes))
            return
