"""torchvision's segmenters (DeepLabV3, FCN) behind ``Segmenter``; each takes images in [0, 1], names its layers and
roles and says its ``task``."""

from __future__ import annotations

import torchvision
from torch import nn
from torch.nn import functional as F

from cnnvis.models.base import IMAGENET_MEAN, IMAGENET_STD, Normalize
from cnnvis.models.weights import _torchvision_weights


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
