"""Zeiler & Fergus 2014 Fig. 8 (left): the masked regions of the correspondence analysis; Table 1 as a plot."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.patches import Rectangle

from cnnvis.plotting import legend_outside, to_image
from cnnvis.stats import bootstrap_mean


def parts_figure(x, trial, classes):
    """Each dog with its part boxes and the random box of the first repeat (the paper's Fig. 8 left)."""
    colors = {"right_eye": "red", "left_eye": "lime", "nose": "yellow", "random": "cyan"}
    cols = min(len(x), 6)
    rows = -(-len(x) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3 * cols, 3 * rows + 0.4), squeeze=False)
    for ax in axes.flat[len(x):]:
        ax.axis("off")
    for i, ax in enumerate(axes.flat[:len(x)]):
        ax.imshow(to_image(x[i]))
        for part, b in trial.items():
            x0, y0, x1, y1 = b[i]
            ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor=colors[part], lw=1.5))
        ax.set_title(classes[i][:24], fontsize=9)
        ax.axis("off")
    handles = [Rectangle((0, 0), 1, 1, fill=False, edgecolor=c, label=p.replace("_", " ")) for p, c in colors.items()]
    fig.legend(handles=handles, loc="lower center", ncol=4, fontsize=9, frameon=False)
    fig.suptitle("Masked regions (each is filled with the mean colour, one at a time)", fontsize=10)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    return fig


def table1_figure(scores, layers: dict, paper: dict, title: str):
    """ZF Table 1 as a plot, one panel per layer (``layers``: {panel name: our layer}): per location (the parts, then
    random regions) each image's Δ as a dot, their mean with its 95 % bootstrap interval over images, and the paper's
    Δ (``paper``: {panel name: {location: Δ}}) marked. ``scores``: one row per image, location and layer."""
    fig, axes = plt.subplots(1, len(layers), figsize=(3.6 * len(layers) + 1.6, 3.6), squeeze=False)
    for ax, (panel, layer) in zip(axes[0], layers.items()):
        locations = list(paper[panel])
        x = np.arange(len(locations))
        for xi, location in zip(x, locations):
            values = scores[(scores.location == location) & (scores.layer == layer)].delta.to_numpy()
            est = bootstrap_mean(values)
            ax.scatter(np.full(len(values), xi), values, s=12, color="C0", alpha=0.5, linewidths=0)
            bar = [[est.value - est.lo], [est.hi - est.value]] if est.has_interval else None
            ax.errorbar([xi], [est.value], yerr=bar, fmt="o", color="C0", capsize=4,
                        label="ours: mean, 95 % bootstrap\ninterval (dots: images)" if xi == 0 else None)
        ax.scatter(x, [paper[panel][loc] for loc in locations], marker="x", s=40, color="C3", zorder=4,
                   label="paper (ZFNet)")
        ax.set_xticks(x, [loc.replace("_", " ") for loc in locations], fontsize=8)
        ax.set_title(f"{panel} (ours: {layer})", fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    axes[0, 0].set_ylabel("Δ (lower = more consistent)")
    legend_outside(axes[0, -1])
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig
