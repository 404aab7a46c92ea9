"""CAM-family figures: an images x methods grid (Grad-CAM Fig. 1 / Score-CAM Fig. 1 layout) with overlays,
boxes and a colorbar; input-space signals (guided backprop, deconvnet) shown as images, as in their papers."""

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.patches import Rectangle

from cnnvis.cams import maps_for_classes
from cnnvis.plotting import legend_outside, rescale, to_image, wrap_to_width


def signal_image(signal: torch.Tensor, percentile: float = 99.0) -> np.ndarray:
    """A signed (3, H, W) input-space signal as an RGB picture: 0 at grey, +-1 at the ``percentile`` of its magnitude
    (beyond it clipped): scaled by its largest value, a few extreme pixels leave the rest grey."""
    s = signal.detach().cpu().permute(1, 2, 0).numpy().astype(np.float64)
    scale = np.percentile(np.abs(s), percentile)
    return np.clip(0.5 + 0.5 * s / scale, 0, 1) if scale > 0 else np.full_like(s, 0.5)


def class_pair_image(model, x: torch.Tensor, logits: torch.Tensor, layer: str, batch_size: int,
                     min_second: float = 0.15) -> int:
    """The image for Grad-CAM Fig. 1: of the images whose second most probable class has p >= ``min_second`` (all,
    when none has), the one whose two classes' Grad-CAM maps overlap least (cosine), so the pair shows two objects
    in two places, as the paper's cat and dog, rather than two names of one object ("maillot" and "tank suit")."""
    top2 = logits.softmax(1).topk(2, dim=1)
    candidates = (top2.values[:, 1] >= min_second).nonzero().flatten().tolist() or list(range(len(x)))
    overlap = {}
    for i in candidates:
        maps = maps_for_classes(model, x[i], top2.indices[i].tolist(), ["gradcam"], layer, batch_size)["gradcam"]
        overlap[i] = float(torch.nn.functional.cosine_similarity(maps[0].flatten(), maps[1].flatten(), dim=0))
    return min(overlap, key=overlap.get)


def method_grid(images: torch.Tensor, attributions: dict[str, torch.Tensor], title: str, captions=None,
                boxes=None, predicted_boxes=None, cmap: str = "jet"):
    """Rows: images; columns: the image, then each method. (N, H, W) maps are min-max scaled and overlaid
    on the image; (N, 3, H, W) signals are drawn as pictures (``signal_image``). ``boxes``: ground truth (green);
    ``predicted_boxes`` {method: (N, 4)}: the box the localization rule draws from that method's map (red)."""
    n, cols = len(images), len(attributions) + 1
    width = 1.55 * cols + 0.8
    fig, axes = plt.subplots(n, cols, figsize=(width, 1.6 * n + 0.5), squeeze=False,
                             layout="constrained")  # room for column titles of several lines under the suptitle
    heat = None
    for i in range(n):
        img = to_image(images[i])
        axes[i, 0].imshow(img)
        if captions is not None:
            axes[i, 0].set_title(captions[i], fontsize=6)
        for col, (name, attr) in enumerate(attributions.items(), start=1):
            ax = axes[i, col]
            if attr.ndim == 4:
                ax.imshow(signal_image(attr[i]))
            else:
                ax.imshow(img)
                heat = ax.imshow(rescale(attr[i].cpu().numpy()), cmap=cmap, alpha=0.5, vmin=0, vmax=1)
            if predicted_boxes is not None and name in predicted_boxes:
                x0, y0, x1, y1 = predicted_boxes[name][i]
                ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, color="red", lw=1))
            if i == 0:
                ax.set_title(name, fontsize=8)
        for col in range(cols):
            if boxes is not None:
                x0, y0, x1, y1 = boxes[i]
                axes[i, col].add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, color="lime", lw=1))
            axes[i, col].axis("off")
    if heat is not None:
        fig.colorbar(heat, ax=axes.ravel().tolist(), fraction=0.015, pad=0.01, label="map (min-max scaled)")
    fig.suptitle(wrap_to_width(title, width, 10), fontsize=10)
    return fig


def curves_figure(curves: dict[str, dict[str, np.ndarray]], title: str):
    """Mean deletion and insertion curves (RISE Fig. 4 layout): probability vs fraction of pixels changed."""
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for ax, mode in zip(axes, ("deletion", "insertion")):
        for name, per_mode in curves.items():
            c = per_mode[mode]
            ax.plot(np.linspace(0, 1, len(c)), c, label=name, lw=1.2)
        ax.set_xlabel(f"fraction of pixels {'removed' if mode == 'deletion' else 'inserted'}")
        ax.set_ylabel("class probability")
        ax.set_title(f"{mode} (mean over images)")
        ax.grid(alpha=0.3)
    legend_outside(axes[1])
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def class_maps_row(image: torch.Tensor, maps: torch.Tensor, captions: list[str], title: str, cmap: str = "jet"):
    """CAM Fig. 4's layout: the image, then its map for each of several classes (``maps`` (k, H, W), each min-max
    scaled and overlaid), the class and its probability above each."""
    k = len(maps)
    fig, axes = plt.subplots(1, k + 1, figsize=(1.9 * (k + 1) + 0.6, 2.6), squeeze=False, layout="constrained")
    img = to_image(image)
    axes[0, 0].imshow(img)
    axes[0, 0].set_title("image", fontsize=8)
    heat = None
    for ax, m, caption in zip(axes[0, 1:], maps, captions):
        ax.imshow(img)
        heat = ax.imshow(rescale(m.cpu().numpy()), cmap=cmap, alpha=0.5, vmin=0, vmax=1)
        ax.set_title(caption, fontsize=7)
    for ax in axes[0]:
        ax.axis("off")
    if heat is not None:
        fig.colorbar(heat, ax=axes.ravel().tolist(), fraction=0.015, pad=0.01, label="map (min-max scaled)")
    fig.suptitle(title, fontsize=9)
    return fig


def class_figures(model, x: torch.Tensor, logits: torch.Tensor, names: list[str], methods, layer: str,
                  batch_size: int) -> tuple:
    """Grad-CAM Fig. 1 (Grad-CAM and guided Grad-CAM of an image's two most probable classes) and CAM Fig. 4 (its maps
    of the five most probable), on the image of ``x`` that ``class_pair_image`` picks: the two figures, each None
    when ``methods`` lacks what it shows."""
    top = logits.softmax(1).topk(min(5, logits.shape[1]), dim=1)
    i = class_pair_image(model, x, logits, layer, batch_size)
    classes = top.indices[i].tolist()
    captions = [f"{names[c].split(',')[0][:18]} (p = {p:.2f})" for c, p in zip(classes, top.values[i].tolist())]
    maps = maps_for_classes(model, x[i], classes, [m for m in ("cam", "gradcam", "guided_gradcam") if m in methods],
                            layer, batch_size)
    pair_fig = top5_fig = None
    pair = {m: maps[m][:2] for m in ("gradcam", "guided_gradcam") if m in maps}
    if pair:  # the same image in both rows, each row one class
        pair_fig = method_grid(
            x[i].expand(2, -1, -1, -1), pair, f"Class-discriminative (Grad-CAM Fig. 1): the two most probable "
            f"classes of the image, of {len(x)}, whose pair's Grad-CAM maps overlap least", captions[:2])
    if "cam" in maps:
        top5_fig = class_maps_row(
            x[i], maps["cam"], captions, f"CAM of the image's {len(classes)} most probable classes (Zhou et al. 2016 "
            "Fig. 4)")
    return pair_fig, top5_fig
