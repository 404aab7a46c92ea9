"""Zeiler & Fergus Fig. 2 (top-9 deconvnet projections beside their image patches) and Girshick et al.
Fig. 4 (top patches of units, one row per unit)."""

import matplotlib.pyplot as plt
import numpy as np
import torch
from torch.nn import functional as F

from cnnvis.plotting import grid_shape, to_image


def square_tile(patch: torch.Tensor, size: int, fill: float = 1.0) -> np.ndarray:
    """A (3, h, w) crop padded to a square (``fill``, centered: aspect kept) and resized to size x size."""
    c, h, w = patch.shape
    side = max(h, w)
    canvas = torch.full((c, side, side), fill, dtype=patch.dtype)
    top, left = (side - h) // 2, (side - w) // 2
    canvas[:, top:top + h, left:left + w] = patch
    mode = "nearest" if side < size else "area"  # small fields (layer 1) as crisp pixels
    return F.interpolate(canvas[None].float(), size=(size, size), mode=mode)[0].permute(1, 2, 0).numpy()


def projection_tile(projection: torch.Tensor, size: int, quantile: float = 0.995) -> np.ndarray:
    """A projection crop, contrast-normalized on its own around mid-grey (0): scaled so that its
    ``quantile`` of absolute values reaches the full range (a few extreme pixels would hide the rest)."""
    p = projection.float()
    scale = float(torch.quantile(p.abs().flatten(), quantile)) or float(p.abs().max()) or 1.0
    return square_tile((0.5 + 0.5 * (p / scale)).clamp(0, 1), size, fill=0.5)


def mosaic(tiles: list[np.ndarray], cols: int, pad: int = 1, fill: float = 1.0) -> np.ndarray:
    """Equal (s, s, 3) tiles in a grid with ``pad``-pixel gutters."""
    s = tiles[0].shape[0]
    rows = -(-len(tiles) // cols)
    out = np.full((rows * (s + pad) - pad, cols * (s + pad) - pad, 3), fill)
    for i, t in enumerate(tiles):
        r, c = divmod(i, cols)
        out[r * (s + pad): r * (s + pad) + s, c * (s + pad): c * (s + pad) + s] = t
    return out


def top9_figure(maps: list[dict], title: str, maps_per_row: int | None = None,
                projection_heading: str = "deconvnet projections"):
    """ZF Fig. 2 for one layer: left, per feature map a 3x3 grid of its top-9 projections; right, the
    3x3 grid of the image patches under them, in the same arrangement. ``maps``: dicts with ``channel``,
    ``projections`` and ``patches`` (lists of (s, s, 3) tiles, strongest first)."""
    rows, cols = grid_shape(len(maps), maps_per_row)
    k = len(maps[0]["patches"])
    per = int(np.ceil(np.sqrt(k)))
    blocks = {key: [mosaic(m[key], per) for m in maps] for key in ("projections", "patches")}
    side = blocks["patches"][0].shape[0]
    gutter = max(4, side // 12)
    fig, axes = plt.subplots(1, 2, figsize=(2 * (0.6 + 1.9 * cols), 0.9 + 1.9 * rows),
                             layout="constrained")  # room for a title of several lines
    for ax, key, heading in zip(axes, ("projections", "patches"), (projection_heading, "image patches")):
        ax.imshow(mosaic(blocks[key] + [np.ones_like(blocks[key][0])] * (rows * cols - len(maps)), cols, gutter))
        for i, m in enumerate(maps):
            r, c = divmod(i, cols)
            ax.text(c * (side + gutter) + 2, r * (side + gutter) + 2, f"#{m['channel']}", fontsize=7, va="top",
                    color="white", bbox=dict(facecolor="black", alpha=0.6, pad=1, linewidth=0))
        ax.set_title(heading, fontsize=10)
        ax.axis("off")
    fig.suptitle(title, fontsize=11)
    return fig


def unit_rows_figure(rows: list[dict], title: str):
    """Girshick Fig. 4: one row per unit, its top patches left to right (strongest first), with their
    activation and class. ``rows``: dicts with ``unit``, ``patches`` (tiles), ``values``, ``labels``."""
    k = len(rows[0]["patches"])
    fig, axes = plt.subplots(len(rows), k, figsize=(0.95 * k + 0.8, 1.15 * len(rows) + 0.6), squeeze=False)
    for r, row in enumerate(rows):
        for j in range(k):
            ax = axes[r, j]
            ax.axis("off")
            if j < len(row["patches"]):
                ax.imshow(to_image(row["patches"][j]))
                ax.set_title(f"{row['values'][j]:.2g} {row['labels'][j][:10]}", fontsize=6)
        axes[r, 0].text(-0.08, 0.5, f"unit {row['unit']}", transform=axes[r, 0].transAxes, fontsize=8,
                        ha="right", va="center", rotation=90)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig
