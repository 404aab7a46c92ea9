"""Zeiler & Fergus Fig. 7: occlusion sensitivity, one row of five panels per image."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.colors import ListedColormap
from matplotlib.patches import Patch, Rectangle

from cnnvis.plotting import to_image, wrap_to_axes

LEGEND_CLASSES = 7  # panel (e) names the most frequent classes; the rest share one colour
TITLE_POINTS = 9  # the panels' titles, wrapped to their panel's width


def _map_extent(maps) -> list[float]:
    """imshow extent that puts each map cell at its occluder's centre, in image pixels."""
    yc, xc = (c.float().numpy() for c in maps.centers)
    half = maps.stride / 2
    return [xc[0] - half, xc[-1] + half, yc[-1] + half, yc[0] - half]


def projection_image(projection: torch.Tensor) -> np.ndarray:
    """A (3, H, W) signed projection as an (H, W, 3) image around grey, scaled by its own 99.5th percentile."""
    proj = projection.detach().cpu().permute(1, 2, 0).numpy()
    scale = np.percentile(np.abs(proj), 99.5) or 1.0  # a few extreme pixels would grey out the rest
    return np.clip(0.5 + 0.5 * proj / scale, 0, 1)


def montage(projection: np.ndarray, tiles: list[np.ndarray], side: int = 224, cols: int = 3) -> np.ndarray:
    """The projection (side x side) beside a ``cols``-wide grid of tiles, each resized to side/cols."""
    tile = side // cols
    grid = np.ones((side, side, 3))
    for k, crop in enumerate(tiles[: cols * cols]):
        resized = torch.nn.functional.interpolate(torch.from_numpy(crop).permute(2, 0, 1)[None].float(),
                                                  size=(tile - 2, tile - 2), mode="bilinear", align_corners=False)
        r, c = divmod(k, cols)
        grid[r * tile + 1:(r + 1) * tile - 1, c * tile + 1:(c + 1) * tile - 1] = resized[0].permute(1, 2, 0).clamp(0, 1).numpy()
    gap = np.ones((side, 8, 3))
    return np.concatenate([projection, gap, grid], axis=1)


def _title(ax, text: str):
    ax.set_title(wrap_to_axes(ax, text, TITLE_POINTS), fontsize=TITLE_POINTS)


def occlusion_figure(image: torch.Tensor, maps, class_names: list[str], true_label: int, fill,
                     projection: torch.Tensor | None = None, others: list[torch.Tensor] | None = None,
                     method: str = "deconvnet", title: str = ""):
    """(a) input with the occluder to scale, (b) total activation of the chosen feature map, (c) that map's
    strongest activation in this image projected to pixels by ``method``, beside the projections of its strongest
    activations in other images (``others``, each cut to its receptive field), (d) p(true class) and (e) the
    most probable class, all against the occluder's position."""
    fig, axes = plt.subplots(1, 5, figsize=(21, 4.4), gridspec_kw={"width_ratios": [1, 1.15, 2.05, 1.15, 1.5]})
    h, w = image.shape[-2:]
    extent = _map_extent(maps)
    row, col = maps.most_sensitive()

    ax = axes[0]
    ax.imshow(to_image(image))
    y0, x0 = int(maps.ys[row]), int(maps.xs[col])
    ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), maps.size, maps.size, facecolor=np.asarray(fill, dtype=float),
                           edgecolor="white", linewidth=1))
    _title(ax, f"(a) input: {class_names[true_label]}\n{maps.size}-px occluder, stride {maps.stride}")

    ax = axes[1]
    if maps.activation is not None:
        im = ax.imshow(maps.activation.numpy(), cmap="jet", extent=extent, interpolation="nearest")
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.03)
        _title(ax, f"(b) total activation, {maps.layer} map {maps.channel}\n(unoccluded: {maps.clean_activation:.4g})")
    ax.set_xlim(0, w)
    ax.set_ylim(h, 0)

    ax = axes[2]
    if projection is not None:
        others = others or []
        proj = projection_image(projection)
        ax.imshow(montage(proj, [projection_image(p) for p in others], side=proj.shape[0]))
        _title(ax, f"(c) {maps.layer} map {maps.channel}, {method}: its strongest activation here\n"
                   f"| in the {len(others)} other images it excites most")
    else:
        ax.text(0.5, 0.5, "no projection", ha="center", va="center")
    ax.axis("off")

    ax = axes[3]
    im = ax.imshow(maps.probability.numpy(), cmap="jet", extent=extent, interpolation="nearest", vmin=0)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.03)
    _title(ax, f"(d) p({class_names[maps.target]})\n(unoccluded: {maps.clean_probability:.3f})")
    ax.set_xlim(0, w)
    ax.set_ylim(h, 0)

    ax = axes[4]
    classes, counts = maps.top_class.unique(return_counts=True)
    order = classes[counts.argsort(descending=True)].tolist()
    shown = order[:LEGEND_CLASSES]
    codes = torch.full_like(maps.top_class, len(shown))
    for k, c in enumerate(shown):
        codes[maps.top_class == c] = k
    colors = list(plt.get_cmap("tab10").colors[: len(shown)]) + [(0.6, 0.6, 0.6)]
    ax.imshow(codes.numpy(), cmap=ListedColormap(colors), vmin=-0.5, vmax=len(colors) - 0.5, extent=extent,
              interpolation="nearest")
    ax.set_xlim(0, w)
    ax.set_ylim(h, 0)
    handles = [Patch(color=colors[k], label=class_names[c][:22] + (" (true)" if c == true_label else ""))
               for k, c in enumerate(shown)]
    if len(order) > len(shown):
        handles.append(Patch(color=colors[-1], label=f"{len(order) - len(shown)} other classes"))
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.02, 1), fontsize=7, frameon=False)
    _title(ax, "(e) most probable class")
    for ax in (axes[0], axes[1], axes[3], axes[4]):
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig
