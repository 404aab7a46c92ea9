"""Reshapes that turn a layer's output into (N, C, H, W) maps for the CAM family: token sequences, channels-last
maps, a detector's FPN levels. A model names its own as ``model.cam_reshape`` (``cnnvis.models``)."""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch.nn import functional as F


def vit_reshape(tokens: torch.Tensor) -> torch.Tensor:
    """A ViT's (N, 1 + h*w, C) tokens as (N, C, h, w) maps: the class token dropped, the patch grid square
    (pytorch-grad-cam's vit_reshape_transform with the grid inferred); (N, C, H, W) inputs pass unchanged."""
    if tokens.ndim == 4:  # the patch embedding's conv output is a map already
        return tokens
    side = math.isqrt(tokens.shape[1] - 1)
    if side * side != tokens.shape[1] - 1:
        raise ValueError(f"vit_reshape expects 1 class token + a square grid of patches, got {tokens.shape[1]} tokens")
    return tokens[:, 1:].reshape(len(tokens), side, side, tokens.shape[2]).permute(0, 3, 1, 2)


def swin_reshape(tokens: torch.Tensor) -> torch.Tensor:
    """A torchvision Swin layer's channels-last (N, H, W, C) output as (N, C, H, W)."""
    if tokens.ndim != 4:
        raise ValueError(f"swin_reshape expects torchvision Swin's (N, H, W, C) maps, got shape {tuple(tokens.shape)}")
    return tokens.permute(0, 3, 1, 2)


def fpn_reshape(levels: Mapping | torch.Tensor) -> torch.Tensor:
    """A detector backbone's FPN levels {name: (N, 256, h_i, w_i)} as one (N, 256 * levels, h, w) map: absolute
    values resized (bilinear) to the last, coarsest level ('pool') and concatenated, as pytorch-grad-cam's
    fasterrcnn_reshape_transform. A tensor (one conv layer of the detector) passes unchanged."""
    if isinstance(levels, torch.Tensor):
        return levels
    size = list(levels.values())[-1].shape[-2:]
    return torch.cat([F.interpolate(v.abs(), size, mode="bilinear") for v in levels.values()], 1)
