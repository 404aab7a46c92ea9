"""torchvision's Faster R-CNN detector; it takes images in [0, 1], names its layers and roles, says its ``task`` and
carries the ``cam_reshape`` that turns its FPN levels into one (N, C, H, W) map for the CAMs."""

from __future__ import annotations

import torchvision

from cnnvis.models.weights import _torchvision_weights
from cnnvis.reshapes import fpn_reshape


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
