"""Adebayo et al. 2018's figures: Fig. 2's cascade grid (rows: methods; columns: the trained model's map, then
the map after each cumulative re-initialization) and Fig. 4's similarity curves (one panel per measure)."""

import matplotlib.pyplot as plt
import numpy as np

from cnnvis.plotting import legend_outside, rescale, stamp, stamp_random_weights, to_image, wrap_to_width
from cnnvis.stats import bootstrap_mean


def cascade_grid(image, maps: dict[str, list[np.ndarray]], columns: list[str], title: str):
    """``maps``: {method: [(H, W) absolute map per column]}; the first column is the trained model, the others the
    cascade steps named in ``columns`` (each map min-max scaled on its own, as the paper shows them; each re-initialized
    step is stamped "random weights" with its raw maximum, the trained map with its own for comparison)."""
    rows, cols = len(maps), len(columns) + 1
    fig, axes = plt.subplots(rows, cols, figsize=(1.1 * cols + 0.6, 1.15 * rows + 0.6), squeeze=False,
                             layout="constrained")  # room for a title of several lines
    for r, (method, per_step) in enumerate(maps.items()):
        axes[r, 0].imshow(to_image(image))
        axes[r, 0].set_ylabel(method, fontsize=7, rotation=0, ha="right", va="center")
        for c, m in enumerate(per_step, start=1):
            heat = axes[r, c].imshow(rescale(m), cmap="gray", vmin=0, vmax=1)
            if c == 1:
                stamp(axes[r, c], f"raw max {np.max(m):.2g}")
            else:
                stamp_random_weights(axes[r, c], float(np.max(m)))
        for c in range(cols):
            axes[r, c].set_xticks([])
            axes[r, c].set_yticks([])
            if r == 0:
                axes[r, c].set_title("image" if c == 0 else columns[c - 1], fontsize=7)
    fig.colorbar(heat, ax=axes.ravel().tolist(), fraction=0.015, pad=0.01, label="|map|, each min-max scaled")
    fig.suptitle(wrap_to_width(title, fig.get_figwidth(), 9), fontsize=9)
    return fig


def similarity_curves(curves: dict[str, dict[str, list[np.ndarray]]], steps: list[str], measures: dict[str, str],
                      title: str):
    """``curves``: {method: {measure: [per-image similarities at each step]}}; mean with its 95 % bootstrap band
    over images, one panel per measure, the steps on the x axis (trained model first)."""
    fig, axes = plt.subplots(1, len(measures), figsize=(3.3 * len(measures), 3.4), squeeze=False)
    x = np.arange(len(steps))
    for ax, (measure, label) in zip(axes[0], measures.items()):
        for method, per_measure in curves.items():
            estimates = [bootstrap_mean(v) for v in per_measure[measure]]
            mean = np.array([e.value for e in estimates])
            style = {"color": "k", "ls": "--"} if method.startswith("baseline") else {}  # not one of the cycled colours
            ax.plot(x, mean, lw=1.2, marker=".", label=method, **style)
            lo, hi = np.array([e.lo for e in estimates]), np.array([e.hi for e in estimates])
            ax.fill_between(x, lo, hi, alpha=0.15)
        ax.set_xticks(x, steps, rotation=90, fontsize=7)
        ax.set_title(label, fontsize=9)
        ax.axhline(0, color="grey", lw=0.5)
        ax.set_ylim(-0.5, 1.05)
    axes[0, 0].set_ylabel("similarity to the trained model's map")
    legend_outside(axes[0, -1], fontsize=6)
    fig.suptitle(wrap_to_width(title, fig.get_figwidth(), 9), fontsize=9)
    fig.tight_layout()
    return fig
