"""Krizhevsky 2012 Fig. 3: first-layer filters as an RGB tile grid; feature maps of chosen layers."""

import glob

import matplotlib.pyplot as plt
import numpy as np
import torch

from cnnvis.plotting import grid_shape, rescale, to_image


def trained_conv1(pattern: str) -> tuple[torch.Tensor, dict] | None:
    """conv1 weights of the lowest-seed trainer checkpoint matching ``pattern``, with its seed, epochs and
    path; None when nothing matches."""
    found = []
    for path in sorted(glob.glob(pattern)):
        blob = torch.load(path, map_location="cpu", weights_only=True)
        found.append((blob.get("seed", 0), path, blob))
    if not found:
        return None
    seed, path, blob = min(found, key=lambda f: (f[0], f[1]))
    state = blob["model"] if "model" in blob else blob
    weight = next(w for k, w in state.items() if k.startswith("features.") and w.ndim == 4)  # the first conv
    return weight, {"seed": seed, "epochs": blob.get("epoch", "?"), "path": path}


def filter_tiles(weight: torch.Tensor, cols: int | None = None, pad: int = 1) -> np.ndarray:
    """(out, 3, k, k) filters -> one RGB mosaic, each filter min-max scaled on its own, 1-pixel white gutters."""
    w = weight.detach().cpu().numpy()
    n, c, k, _ = w.shape
    rows, cols = grid_shape(n, cols)
    mosaic = np.ones((rows * (k + pad) + pad, cols * (k + pad) + pad, 3))
    for i in range(n):
        tile = rescale(w[i].transpose(1, 2, 0)) if c == 3 else np.repeat(rescale(w[i].mean(0))[..., None], 3, -1)
        r, q = divmod(i, cols)
        mosaic[pad + r * (k + pad): pad + r * (k + pad) + k, pad + q * (k + pad): pad + q * (k + pad) + k] = tile
    return mosaic


def filter_grid(weight: torch.Tensor, title: str, cols: int | None = None):
    rows, cols = grid_shape(weight.shape[0], cols)
    mosaic = filter_tiles(weight, cols)
    fig, ax = plt.subplots(figsize=(max(4, 0.8 * cols + 1), max(3, 0.8 * rows + 1)))  # ~0.8 inch a filter
    ax.imshow(mosaic, interpolation="nearest")
    ax.set_title(title)
    ax.axis("off")
    return fig


def feature_maps(image: torch.Tensor, maps: dict[str, torch.Tensor], channels: dict[str, list[int]], title: str):
    """The input, then one row per layer: its chosen channels' maps (shared colour scale per row)."""
    n_cols = max(len(c) for c in channels.values())
    fig, axes = plt.subplots(len(maps), n_cols + 1, figsize=(1.6 * (n_cols + 1) + 0.6, 1.7 * len(maps)), squeeze=False)
    for row, (name, act) in enumerate(maps.items()):
        ax0 = axes[row, 0]
        if row == 0:
            ax0.imshow(to_image(image))
            ax0.set_title("input", fontsize=8)
        ax0.axis("off")
        shown = act[channels[name]]
        signed = bool(shown.min() < 0)  # layers without a rectifier (e.g. residual sums) are signed
        vmax = float(shown.abs().max()) or 1.0
        vmin, cmap = (-vmax, "RdBu_r") if signed else (0, "viridis")
        im = None
        for col in range(n_cols):
            ax = axes[row, col + 1]
            ax.axis("off")
            if col < len(channels[name]):
                ch = channels[name][col]
                im = ax.imshow(act[ch].cpu().numpy(), cmap=cmap, vmin=vmin, vmax=vmax)
                ax.set_title(f"{name}[{ch}]", fontsize=7)
        fig.colorbar(im, ax=axes[row, 1:].tolist(), fraction=0.02, pad=0.01, label="activation")
    fig.suptitle(title)
    return fig
