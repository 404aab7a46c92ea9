"""Heat-map overlays (CAM's figures) and the per-image figure of ``experiment=explain``."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import torch
from PIL import Image

from cnnvis.plotting import rescale, to_image, wrap_to_width


def overlay(image: torch.Tensor, heatmap: torch.Tensor, alpha: float = 0.5) -> np.ndarray:
    """An (H, W, 3) uint8 picture: the (3, H, W) image in [0, 1] under the min-max-scaled (H, W) map in jet."""
    heat = matplotlib.colormaps["jet"](rescale(heatmap.detach().float().cpu().numpy()))[..., :3]
    mixed = (1 - alpha) * to_image(image) + alpha * heat
    return np.round(mixed.clip(0, 1) * 255).astype(np.uint8)


def save_overlay(image: torch.Tensor, heatmap: torch.Tensor, path, alpha: float = 0.5) -> Path:
    """``overlay`` written as a PNG at ``path``."""
    Image.fromarray(overlay(image, heatmap, alpha)).save(path)
    return Path(path)


def explain_figure(image: torch.Tensor, maps: dict[str, torch.Tensor], top5: list[tuple[str, float]], title: str):
    """One row: the image with the model's top-5 classes beside it, then each method's map over the image."""
    width = 2.6 * (len(maps) + 1)
    # constrained layout keeps the suptitle above the top-5 list
    fig, axes = plt.subplots(1, len(maps) + 1, figsize=(width, 3.3), squeeze=False, layout="constrained")
    axes = axes[0]
    axes[0].imshow(to_image(image))
    axes[0].set_title("\n".join(f"{p:.0%} {name[:22]}" for name, p in top5), fontsize=6.5, loc="left")
    for ax, (method, heatmap) in zip(axes[1:], maps.items()):
        ax.imshow(overlay(image, heatmap))
        ax.set_title(method, fontsize=8)
    for ax in axes:
        ax.axis("off")
    fig.suptitle(wrap_to_width(title, width, 8), fontsize=8)
    return fig


def figure_names(paths: list[str]) -> list[str]:
    """``explain_<image>`` for each image: its path below the images' common folder, '/' as '_', without the suffix
    unless two images would then share a name (a.jpg and a.png)."""
    root = os.path.commonpath([os.path.dirname(p) for p in paths])
    relative = [Path(os.path.relpath(p, root)) for p in paths]
    stems = ["_".join(r.with_suffix("").parts) for r in relative]
    shared = Counter(stems)
    return [f"explain_{s}_{r.suffix.lstrip('.')}" if shared[s] > 1 else f"explain_{s}" for s, r in zip(stems, relative)]
