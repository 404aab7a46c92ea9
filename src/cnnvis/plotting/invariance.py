"""Zeiler & Fergus Fig. 5: one row per transformation; the examples, two layers' feature distances and p(true)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from cnnvis.plotting import to_image

UNITS = {"translate_y": "vertical translation (px)", "scale": "scale (x)", "rotate": "rotation (degrees)"}


def invariance_figure(curves: list, examples: list, shown_at: list[float], names: list[str], layer_titles: list[str],
                      title: str = ""):
    """``curves``: one InvarianceCurves per row; ``examples[row]``: (N, 3, H, W) images transformed by
    ``shown_at[row]``, a strip in column 1; columns 2, 3: distance at the layers; 4: p(true label). Panels are
    lettered as the paper's Fig. 5: rows a-c (the transformations), columns 1-4."""
    layers = list(curves[0].distances)
    fig, axes = plt.subplots(len(curves), 2 + len(layers), figsize=(5.2 + 3.6 * (1 + len(layers)), 3.2 * len(curves)),
                             squeeze=False, gridspec_kw={"width_ratios": [1.6] + [1] * (1 + len(layers))})
    colors = plt.get_cmap("tab10").colors
    for row, (c, strip, amount) in enumerate(zip(curves, examples, shown_at)):
        ax = axes[row, 0]
        ax.imshow(np.concatenate([to_image(x) for x in strip], axis=1))
        ax.axis("off")
        letter = "abcdefgh"[row]
        ax.set_title(f"({letter}1) {UNITS[c.kind]} = {amount:g}", fontsize=9)
        panels = [(c.distances[name].numpy(), f"{layer_titles[k]}: Euclidean distance") for k, name in enumerate(layers)]
        panels.append((c.probability.numpy(), "p(true label)"))
        for col, (values, label) in enumerate(panels, start=1):
            ax = axes[row, col]
            for i, v in enumerate(values):
                ax.plot(c.amounts, v, "-o", ms=2.5, lw=1.2, color=colors[i % 10], label=names[i] if row == 0 else None)
            ax.set_xlabel(UNITS[c.kind], fontsize=8)
            ax.set_title(f"({letter}{col + 1}) {label}", fontsize=9)
            ax.tick_params(labelsize=7)
            if label.startswith("p("):
                ax.set_ylim(0, 1)
    handles, labels = axes[0, 1].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=8, frameon=False)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    return fig
