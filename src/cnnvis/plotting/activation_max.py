"""Activation maximization figures: a row of optimized images per layer (Yosinski 2015 Fig. 4), a grid of
class images (Simonyan 2013 Fig. 1), and a sweep with one row per regularization setting (Yosinski Fig. 3)."""

import json
import textwrap
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
from PIL import Image

from cnnvis.plotting import grid_shape, to_image, wrap_to_width


def unit_grid(rows: dict, title: str):
    """``rows`` maps a layer name to (images (n, 3, H, W), captions); one figure row per layer."""
    n_cols = max(len(images) for images, _ in rows.values())
    fig, axes = plt.subplots(len(rows), n_cols, figsize=(1.7 * n_cols, 1.95 * len(rows) + 0.4), squeeze=False,
                             layout="constrained")  # room for the captions under a suptitle of several lines
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
    fig.suptitle(wrap_to_width(title, fig.get_figwidth(), 9), fontsize=9)
    return fig


def class_grid(images, captions: list[str], title: str, cols: int | None = None):
    """One optimized image per class; captions say the class, the model's top-1 on it and the score."""
    n_rows, n_cols = grid_shape(len(images), cols or min(len(images), 6))
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(2.0 * n_cols, 2.5 * n_rows + 0.4), squeeze=False,
                             layout="constrained")  # room for the three-line captions under a suptitle of several lines
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < len(images):
            ax.imshow(to_image(images[i]))
            ax.set_title(captions[i], fontsize=7)
    fig.suptitle(wrap_to_width(title, fig.get_figwidth(), 9), fontsize=9)
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
    fig.suptitle(wrap_to_width(title, fig.get_figwidth(), 9), fontsize=9)
    fig.tight_layout()
    return fig


def write_sweep_row(strip_path: Path, label_path: Path, sweep_dir: Path, tag, preset, reg, rows, unit_panels,
                    class_panel, tile, lr=None):
    """This job's strip of images (lossless PNG) and its label (``lr``: its step, where the preset sets its own),
    then the sweep figure over every job so far."""
    images = [unit_panels[layer][0][0] for layer in unit_panels][:3] + list(class_panel[0][:4])
    first_of_layer = {r["layer"]: r["name"] for r in reversed(rows) if r["kind"] != "class"}
    titles = [first_of_layer[layer] for layer in unit_panels][:3]
    titles += [r["name"][:14] for r in rows if r["kind"] == "class"][:4]
    strip = torch.cat([torch.nn.functional.interpolate(x[None], size=(tile, tile), mode="area")[0]
                       for x in images], dim=-1)
    Image.fromarray((strip.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)).save(strip_path)
    classes = [r for r in rows if r["kind"] == "class"]
    ratio = np.nanmedian([r["ratio"] for r in rows if r["kind"] != "class"])
    settings = ", ".join(f"{k}={v}" for k, v in vars(reg).items() if v) or "no regularizer"
    settings += f", lr={lr:g}" if lr is not None else ""
    label = (f"{preset}\n{textwrap.fill(settings, 30)}\nclass top-1 {sum(r['top1_is_target'] for r in classes)}/"
             f"{len(classes)}\nmedian unit ratio {ratio:.2f}")
    label_path.write_text(json.dumps({"label": label, "titles": titles}))
    # rglob: a job folder nests deeper when an override's value is a path
    jobs = sorted(p.parent for p in sweep_dir.rglob("sweep_row.json") if (p.parent / "sweep_strip.png").exists())
    grid_rows = [(json.loads((p / "sweep_row.json").read_text())["label"],
                  np.asarray(Image.open(p / "sweep_strip.png"))) for p in jobs]
    fig = sweep_grid(grid_rows, titles, tile, f"Regularization sweep ({len(jobs)} jobs): a channel of three layers of "
                     f"{tag} and class images; each row one setting")
    fig.savefig(sweep_dir / "sweep.png", dpi=80, bbox_inches="tight")
    plt.close(fig)
