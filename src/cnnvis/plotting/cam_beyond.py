"""Grad-CAM on several kinds of model side by side: rows are images, columns the image and then one model each,
its map over the image with what the map explains drawn on it (a detection's box, a segment's outline)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import matplotlib.pyplot as plt
import torch
from matplotlib.patches import Rectangle

from cnnvis.plotting import rescale, stamp_random_weights, to_image, wrap_lines


@dataclass
class MapColumn:
    """One model's column: its title, a map per image (N, H, W), a caption per image (the target explained),
    and optionally a box (x0, y0, x1, y1) or a boolean (H, W) mask per image (None where an image has none);
    ``random_weights``: the model has random weights (each panel is stamped so, with its map's raw maximum)."""

    title: str
    maps: torch.Tensor
    captions: list[str]
    boxes: Optional[list] = None
    masks: Optional[list] = None
    random_weights: bool = False


def model_grid(images: torch.Tensor, columns: list[MapColumn], title: str, image_captions=None, cmap: str = "jet"):
    """Rows: images; columns: the image, then each model's min-max-scaled map overlaid on it, with the
    column's box (red) or mask outline (white) drawn where given; one colorbar for all maps."""
    n, cols = len(images), len(columns) + 1
    # constrained layout keeps the multi-line column titles and the suptitle apart
    fig, axes = plt.subplots(n, cols, figsize=(2.1 * cols + 0.8, 2.25 * n + 1.0), squeeze=False, layout="constrained")
    heat = None
    for i in range(n):
        img = to_image(images[i])
        axes[i, 0].imshow(img)
        if image_captions is not None:
            axes[i, 0].set_title(wrap_lines(image_captions[i], 34), fontsize=6.5)
        for col, column in enumerate(columns, start=1):
            ax = axes[i, col]
            ax.imshow(img)
            heat = ax.imshow(rescale(column.maps[i].cpu().numpy()), cmap=cmap, alpha=0.5, vmin=0, vmax=1)
            if column.boxes is not None and column.boxes[i] is not None:
                x0, y0, x1, y1 = [float(v) for v in column.boxes[i]]
                ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, color="red", lw=1.2))
            if column.masks is not None and column.masks[i] is not None and column.masks[i].any():
                ax.contour(column.masks[i].cpu().numpy().astype(float), levels=[0.5], colors="white",
                           linewidths=0.8)
            if column.random_weights:
                stamp_random_weights(ax, float(column.maps[i].max()))
            caption = column.captions[i]
            ax.set_title(f"{wrap_lines(column.title, 34)}\n{caption}" if i == 0 else caption, fontsize=6.5)
        for ax in axes[i]:
            ax.axis("off")
    if heat is not None:
        fig.colorbar(heat, ax=axes.ravel().tolist(), shrink=0.6, label="Grad-CAM (min-max scaled)")
    fig.suptitle(wrap_lines(title, 30 * cols), fontsize=8.5)
    return fig


