"""Zeiler & Fergus 2014 Fig. 8 (left): the masked regions of the correspondence analysis."""

from __future__ import annotations

import matplotlib.pyplot as plt
from matplotlib.patches import Rectangle

from cnnvis.plotting import to_image


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
