"""AlexNet (Krizhevsky et al. 2012, one tower) and ZFNet (Zeiler & Fergus 2013) from their layer specs, at any
width (the CPU presets scale the channel counts)."""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from cnnvis.models.base import CONV_STACK_ROLES, IMAGENET_MEAN, IMAGENET_STD, ImageClassifier, Normalize


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
