"""Receptive fields from layer geometry: the input pixels under any activation of a named layer.

Walks the modules from the input to the layer, composing each one's (kernel, stride, padding, dilation)
per axis: output index ``i`` of the layer sees input rows ``[i * jump + lo, i * jump + hi]``.
Handles plain conv/pool stacks (ZFNet, AlexNet, VGG), TensorFlow 'SAME' padding (``SamePad``: the extra
pixel goes right/bottom, so its offset depends on the input size, which is tracked), depthwise convs,
and residual blocks, whose field is that of their longest path (the conv branch; the skip is shorter).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from cnnvis.models import ImageClassifier, MBConv, Normalize, SamePad

# Modules that act on each pixel (or across channels only): they leave the receptive field unchanged.
POINTWISE = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.GELU, nn.SiLU, nn.Hardswish, nn.Sigmoid, nn.Tanh,
             nn.BatchNorm2d, nn.LocalResponseNorm, nn.Dropout, nn.Identity, Normalize)
GLOBAL = (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.Flatten, nn.Linear)


@dataclass
class Axis:
    """One spatial axis: map ``size``; unit ``i`` sees input ``[i * jump + lo, i * jump + hi]`` (inclusive)."""

    size: int
    jump: int = 1
    lo: int = 0
    hi: int = 0
    input_size: int = 0

    def apply(self, kernel: int, stride: int, pad_before: int, pad_total: int, dilation: int = 1,
              ceil_mode: bool = False) -> None:
        span = dilation * (kernel - 1)
        out = (self.size + pad_total - span - 1 + (stride - 1 if ceil_mode else 0)) // stride + 1
        self.lo, self.hi = self.lo - pad_before * self.jump, self.hi + (span - pad_before) * self.jump
        self.jump *= stride
        self.size = out

    @property
    def field(self) -> int:
        return self.hi - self.lo + 1

    def interval(self, i: int) -> tuple[int, int]:
        """Half-open input interval under unit ``i``, clipped to the image."""
        return max(i * self.jump + self.lo, 0), min(i * self.jump + self.hi + 1, self.input_size)


@dataclass
class Geometry:
    """The receptive-field geometry of one layer at one input size."""

    layer: str
    rows: Axis
    cols: Axis

    def box(self, y: int, x: int) -> tuple[int, int, int, int]:
        """(y0, y1, x0, x1): half-open input box under unit (y, x), clipped to the image."""
        if not (0 <= y < self.rows.size and 0 <= x < self.cols.size):
            raise IndexError(f"location ({y}, {x}) is outside {self.layer}'s {self.rows.size}x{self.cols.size} map")
        return (*self.rows.interval(y), *self.cols.interval(x))

    @property
    def field(self) -> tuple[int, int]:
        """Unclipped (height, width) of one unit's receptive field."""
        return self.rows.field, self.cols.field

    @property
    def stride(self) -> tuple[int, int]:
        return self.rows.jump, self.cols.jump


class _Reached(Exception):
    pass


def _pair(v) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else tuple(v)


def _children_in_order(module: nn.Module, prefix: str):
    """The sub-modules a forward pass goes through, in order, along the longest path."""
    if isinstance(module, MBConv):  # expand -> depthwise -> project; the identity skip is shorter
        names = ["expand", "depthwise", "project"]
    elif isinstance(module, ImageClassifier):
        names = ["normalize", "features", "pool", "classifier"]
    elif hasattr(module, "conv1") and hasattr(module, "conv2") and hasattr(module, "downsample"):
        # torchvision BasicBlock / Bottleneck: the conv branch; downsample is a 1x1 conv (shorter)
        names = [n for n in ("conv1", "conv2", "conv3") if hasattr(module, n)]
    elif isinstance(module, nn.Sequential):
        names = [n for n, _ in module.named_children()]
    else:
        raise TypeError(
            f"receptive field: don't know the path through {type(module).__name__} at {prefix or 'the model'}; "
            f"supported are nn.Sequential chains of conv/pool/pointwise modules, MBConv and torchvision ResNet blocks")
    return [(f"{prefix}.{n}" if prefix else n, getattr(module, n)) for n in names]


def _walk(module: nn.Module, path: str, target: str, axes: list[Axis]) -> None:
    if isinstance(module, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)):
        k, s = _pair(module.kernel_size), _pair(module.stride or module.kernel_size)
        d = _pair(getattr(module, "dilation", 1))
        if isinstance(module.padding, str):
            raise TypeError(f"receptive field: string padding {module.padding!r} at {path} is not supported")
        p = _pair(module.padding)
        ceil = getattr(module, "ceil_mode", False)
        for a, ax in enumerate(axes):
            ax.apply(k[a], s[a], p[a], 2 * p[a], d[a], ceil)
    elif isinstance(module, SamePad):
        for ax in axes:  # TF 'SAME': total padding depends on the size; the odd pixel goes after
            total = max((math.ceil(ax.size / module.stride) - 1) * module.stride + module.kernel_size - ax.size, 0)
            ax.apply(1, 1, total // 2, total)
    elif isinstance(module, GLOBAL):  # from here on every unit sees the whole image
        for ax in axes:
            ax.size, ax.lo, ax.hi, ax.jump = 1, 0, ax.input_size - 1, ax.input_size
    elif not isinstance(module, POINTWISE):
        for child_path, child in _children_in_order(module, path):
            _walk(child, child_path, target, axes)
    if path == target:
        raise _Reached


def geometry(model: nn.Module, layer: str, input_size: int | tuple[int, int] | None = None) -> Geometry:
    """Receptive-field geometry of ``layer`` (a readable name or module path) for ``input_size`` images
    (default: the model's ``input_size``, else 224)."""
    from cnnvis.models import get_layer

    get_layer(model, layer)  # unknown names fail listing the valid ones
    target = getattr(model, "layers", {}).get(layer, layer)
    h, w = _pair(input_size or getattr(model, "input_size", 224))
    axes = [Axis(h, input_size=h), Axis(w, input_size=w)]
    try:
        _walk(model, "", target, axes)
    except _Reached:
        return Geometry(layer, *axes)
    raise ValueError(f"layer {layer!r} ({target}) is not on the forward path the receptive field walks")


def receptive_field(model: nn.Module, layer: str, y: int, x: int,
                    input_size: int | tuple[int, int] | None = None) -> tuple[int, int, int, int]:
    """(y0, y1, x0, x1): the half-open input-pixel box under activation (y, x) of ``layer``, clipped to the image."""
    return geometry(model, layer, input_size).box(y, x)


def crop_patch(image: torch.Tensor, box) -> torch.Tensor:
    """The part of a (..., H, W) image inside a (y0, y1, x0, x1) box."""
    y0, y1, x0, x1 = (int(v) for v in box)
    return image[..., y0:y1, x0:x1]
