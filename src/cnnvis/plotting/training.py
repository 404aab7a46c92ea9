"""Training curves, side-by-side conv1 filter grids (ZF Fig. 6 (b)/(c)) and feature evolution (ZF Fig. 4)."""

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.ticker import MaxNLocator

from cnnvis.plotting import (legend_outside, rescale, samples_with_band, t_errors, wrap_to_axes,
                             wrap_to_width)
from cnnvis.plotting.filters import filter_tiles


def training_curves(histories: dict, title: str):
    """Loss and top-1 per epoch, train (dashed) and validation (solid), one colour per run."""
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4), layout="constrained")  # room for a 2-line title
    for i, (label, h) in enumerate(histories.items()):
        color = f"C{i % 10}"
        ax_loss.plot(h.epoch, h.train_loss, "--", color=color, label=f"{label} train")
        ax_loss.plot(h.epoch, h.val_loss, "-", color=color, label=f"{label} val")
        ax_acc.plot(h.epoch, h.train_top1, "--", color=color)
        ax_acc.plot(h.epoch, h.val_top1, "-", color=color)
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy", title="loss")
    ax_acc.set(xlabel="epoch", ylabel="top-1 accuracy", title="top-1 (dashed: train, solid: val)", ylim=(0, 1))
    legend_outside(ax_acc, *ax_loss.get_legend_handles_labels(), ncol=1 + len(histories) // 12)
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    return fig


def seed_training_curves(histories: dict, title: str, columns: int = 4):
    """``histories``: {label: [one DataFrame (epoch, train/val loss and top-1) per seed]}. A column of two panels
    per label, loss above top-1, ``columns`` labels to a row; every panel on the same axes, so the labels compare
    side by side instead of as sixteen overlaid curves. Per epoch, each seed's value is a dot and the mean over seeds
    a line with its 95 % t interval (band); validation solid, train dashed. The loss axis spans the seeds' values:
    two seeds' t interval is twelve standard errors wide."""
    labels = list(histories)
    cols = min(columns, len(labels))
    blocks = -(-len(labels) // cols)
    fig, axes = plt.subplots(2 * blocks, cols, figsize=(2.8 * cols + 1.8, 4.2 * blocks + 0.9), squeeze=False,
                             layout="constrained")  # room for a title of several lines
    losses = pd.concat([pd.concat(runs) for runs in histories.values()])[["train_loss", "val_loss"]].to_numpy()
    low, high = np.nanmin(losses), np.nanmax(losses)
    for i, label in enumerate(labels):
        block, col = divmod(i, cols)
        ax_loss, ax_acc = axes[2 * block, col], axes[2 * block + 1, col]
        runs = histories[label]
        for split, fmt, color in (("val", "-", "C0"), ("train", "--", "C1")):
            for ax, metric in ((ax_loss, "loss"), (ax_acc, "top1")):
                by_epoch = pd.concat(runs).groupby("epoch")[f"{split}_{metric}"]
                epochs = list(by_epoch.groups)
                samples_with_band(ax, epochs, [by_epoch.get_group(e).to_numpy() for e in epochs], split, fmt, color)
        ax_loss.set_title(wrap_to_axes(ax_loss, f"{label} ({len(runs)} seeds)", 8), fontsize=8)
        ax_loss.set_ylim(low - 0.05 * (high - low + 1e-9), high + 0.05 * (high - low + 1e-9))
        ax_acc.set_ylim(0, 1)
        for ax in (ax_loss, ax_acc):
            ax.grid(alpha=0.3)
            ax.tick_params(labelsize=7)
        ax_acc.set_xlabel("epoch", fontsize=8)
    for i in range(len(labels), blocks * cols):  # the panels of an incomplete last row
        axes[2 * (i // cols), i % cols].set_visible(False)
        axes[2 * (i // cols) + 1, i % cols].set_visible(False)
    for block in range(blocks):
        axes[2 * block, 0].set_ylabel("cross-entropy", fontsize=8)
        axes[2 * block + 1, 0].set_ylabel("top-1 accuracy", fontsize=8)
    legend_outside(axes[0, cols - 1], *axes[0, 0].get_legend_handles_labels(), fontsize=8)
    text = f"{title}\neach seed a dot, mean over seeds with its 95 % t interval (band); validation solid, train dashed"
    fig.suptitle(wrap_to_width(text, fig.get_figwidth(), 10), fontsize=10)
    return fig


def evolution_grid(projections: dict, epochs: list, title: str):
    """Fig. 4: one row per (layer, channel), one column per kept epoch; each tile the projection of the
    channel's strongest activation over the held-out set at that epoch (min-max scaled per tile)."""
    rows = list(projections)
    width, height = 1.1 * len(epochs) + 0.5, 1.1 * len(rows) + 1.2
    fig, axes = plt.subplots(len(rows), len(epochs), figsize=(width, height), squeeze=False,
                             layout="constrained")  # room for a title of several lines
    for r, key in enumerate(rows):
        for c, epoch in enumerate(epochs):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            proj = projections[key][c]
            if proj is not None:  # a signed (3, H, W) projection
                ax.imshow(rescale(proj.detach().cpu().permute(1, 2, 0).numpy()))
            if r == 0:
                ax.set_title(f"epoch {epoch}", fontsize=7)
            if c == 0:
                ax.set_ylabel(f"{key[0]}[{key[1]}]", fontsize=7)
    fig.suptitle(wrap_to_width(title, width, 8), fontsize=8)
    fig.get_layout_engine().set(wspace=0.01, hspace=0.02)
    return fig


def ablation_bars(labels: list, ours: list, paper: list, title: str, ylabel: str):
    """Per variant, our mean over seeds (bar) with its 95 % t interval and each seed's value (dots), beside the
    paper's number; ``ours``: one array of per-seed values per label. The axis spans the seeds' and the paper's
    values: a wider interval (two seeds' is twelve standard errors wide) runs off it."""
    fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(labels)), 4))
    x = np.arange(len(labels))
    mean, lo, hi = t_errors(ours)
    ax.bar(x - 0.2, mean, 0.4, label="ours (Caltech-101, CPU budget): mean over seeds (dots), 95 % t interval")
    ax.errorbar(x - 0.2, mean, yerr=[lo, hi], fmt="none", ecolor="k", capsize=3)
    for xi, seeds in zip(x - 0.2, ours):
        ax.scatter(np.full(len(seeds), xi), seeds, s=12, color="k", alpha=0.6, linewidths=0, zorder=3)
    theirs = [np.nan if p is None else p for p in paper]
    ax.bar(x + 0.2, theirs, 0.4, label="paper (ImageNet)")
    shown = np.concatenate([np.concatenate(ours), theirs, [0.0]])
    low, high = np.nanmin(shown), np.nanmax(shown)
    ax.set_ylim(low - 0.1 * (high - low + 1e-9), high + 0.1 * (high - low + 1e-9))
    ax.set_xticks(x, labels, rotation=90, fontsize=8)  # upright: long variant names would overlap at a slant
    ax.set(ylabel=ylabel, title=title)
    legend_outside(ax, fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return fig


def projection_rows(rows: dict, title: str):
    """One row of image-space projections per label (e.g. conv2 features of each conv1 arm, Fig. 6 (d)/(e))."""
    n = max(len(v) for v in rows.values())
    fig, axes = plt.subplots(len(rows), n, figsize=(1.1 * n + 1.5, 1.25 * len(rows) + 0.6), squeeze=False,
                             layout="constrained")  # room for a title of several lines
    for r, (label, projections) in enumerate(rows.items()):
        for c in range(n):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c < len(projections):
                ax.imshow(rescale(projections[c].detach().cpu().permute(1, 2, 0).numpy()))
        axes[r, 0].set_ylabel(label, fontsize=8)
    fig.suptitle(wrap_to_width(title, fig.get_figwidth(), 9), fontsize=9)
    fig.get_layout_engine().set(wspace=0.01, hspace=0.02)
    return fig


def recipe_curves(curves: pd.DataFrame, title: str, noise_share: float = 0.05, gate_share: float = 0.20):
    """The conv1 recipe search: (a) the share of conv1 filters whose change from initialization is structured and (b)
    held-out top-1, against training minutes; one colour per recipe, solid for ZF's conv1 and dashed for AlexNet's,
    one line per seed. (a) marks white noise's expected share and the filter gate's bound."""
    fig, (ax_share, ax_acc) = plt.subplots(1, 2, figsize=(11, 4.2), layout="constrained")  # room for a 2-line title
    recipes = list(dict.fromkeys(curves.recipe))
    for (recipe, arm, seed), run in curves.groupby(["recipe", "arm", "seed"], sort=False):
        color = f"C{recipes.index(recipe) % 10}"
        style = "--o" if arm.startswith("AlexNet") else "-o"
        label = f"{recipe}, {arm}" if seed == curves.seed.min() else None
        ax_share.plot(run.train_minutes, run.structured_share, style, color=color, ms=3, label=label)
        ax_acc.plot(run.train_minutes, run.test_top1, style, color=color, ms=3)
    ax_share.axhline(noise_share, color="0.5", lw=0.8, ls=":", label=f"white noise (~{noise_share:g})")
    ax_share.axhline(gate_share, color="k", lw=0.8, ls="-.", label=f"filter gate: lower bound > {gate_share:g}")
    ax_share.set(xlabel="training minutes (this CPU)", ylabel="share of conv1 filters", ylim=(0, 1),
                 title="(a) conv1's W - W0 structured beyond white noise")
    ax_acc.set(xlabel="training minutes (this CPU)", ylabel="top-1", ylim=(0, 1), title="(b) held-out top-1")
    legend_outside(ax_acc, *ax_share.get_legend_handles_labels(), ncol=1)
    for ax in (ax_share, ax_acc):
        ax.xaxis.set_major_locator(MaxNLocator(5))  # long minute labels (a smoke run's 0.0025) would touch
        ax.grid(alpha=0.3)
    fig.suptitle(wrap_to_width(title, fig.get_figwidth(), 12), fontsize=12)
    return fig


def filter_change_grid(rows: dict, title: str):
    """One row per run ({label: {"W": weights, "W - W0": their change from initialization}}): the conv1 filter mosaic
    beside the mosaic of its change, each tile scaled on its own (Fig. 6 (b)/(c) with what training added)."""
    fig, axes = plt.subplots(len(rows), 2, figsize=(8, 3.6 * len(rows) + 0.6), squeeze=False,
                             layout="constrained")  # room for a title of several lines
    for r, (label, kinds) in enumerate(rows.items()):
        for c, (kind, w) in enumerate(kinds.items()):
            axes[r, c].imshow(filter_tiles(w), interpolation="nearest")
            axes[r, c].set_title(wrap_to_axes(axes[r, c], f"{label}: {kind}", 8), fontsize=8)
            axes[r, c].axis("off")
    fig.suptitle(wrap_to_width(title, fig.get_figwidth(), 9), fontsize=9)
    return fig
