"""torchvision's ViT and Swin classifiers. Like the detector and the segmenters, each takes images in [0, 1], names
its layers and roles, says its ``task`` and carries the ``cam_reshape`` that turns its layers' outputs into
(N, C, H, W) maps for the CAMs."""

from __future__ import annotations

import torchvision
from torch import nn

from cnnvis.models.base import IMAGENET_MEAN, IMAGENET_STD, Normalize
from cnnvis.models.weights import _torchvision_weights
from cnnvis.reshapes import swin_reshape, vit_reshape


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
