"""Activation maximization figures: a row of optimized images per layer (Yosinski 2015 Fig. 4), a grid of
class images (Simonyan 2013 Fig. 1), and a sweep with one row per regularization setting (Yosinski Fig. 3)."""

import textwrap

import matplotlib.pyplot as plt
import numpy as np

from cnnvis.plotting import grid_shape, to_image


def unit_grid(rows: dict, title: str):
    """``rows`` maps a layer name to (images (n, 3, H, W), captions); one figure row per layer."""
    n_cols = max(len(images) for images, _ in rows.values())
    fig, axes = plt.subplots(len(rows), n_cols, figsize=(1.7 * n_cols, 1.95 * len(rows) + 0.4), squeeze=False)
    for r, (layer, (images, captions)) in enumerate(rows.items()):
        for c in range(n_cols):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c < len(images):
                ax.imshow(to_image(images[c]))
                ax.set_title(captions[c], fontsize=7)
            else:
                ax.axis("off")
        axes[r, 0].set_ylabel(layer, fontsize=10)
    fig.suptitle(textwrap.fill(title, 18 * n_cols), fontsize=9)
    fig.tight_layout()
    return fig


def class_grid(images, captions: list[str], title: str, cols: int | None = None):
    """One optimized image per class; captions say the class, the model's top-1 on it and the score."""
    n_rows, n_cols = grid_shape(len(images), cols or min(len(images), 6))
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(2.0 * n_cols, 2.5 * n_rows + 0.4), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < len(images):
            ax.imshow(to_image(images[i]))
            ax.set_title(captions[i], fontsize=7)
    fig.suptitle(textwrap.fill(title, 18 * n_cols), fontsize=9)
    fig.tight_layout()
    return fig


def sweep_grid(rows: list[tuple[str, np.ndarray]], column_titles: list[str], tile: int, title: str):
    """One row per sweep job: its label, then its strip of ``tile``-pixel images (H, n * tile, 3 uint8)."""
    n_cols = len(column_titles)
    fig, axes = plt.subplots(len(rows), n_cols, figsize=(1.5 * n_cols + 0.8, 1.6 * len(rows) + 0.6), squeeze=False)
    for r, (label, strip) in enumerate(rows):
        for c in range(n_cols):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            if (c + 1) * tile <= strip.shape[1]:
                ax.imshow(strip[:, c * tile:(c + 1) * tile])
            if r == 0:
                ax.set_title(column_titles[c], fontsize=7)
        axes[r, 0].set_ylabel(label, fontsize=7, rotation=0, ha="right", va="center")
    fig.suptitle(textwrap.fill(title, 18 * n_cols), fontsize=9)
    fig.tight_layout()
    return fig
