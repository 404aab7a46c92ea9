"""Transfer figures: accuracy vs training images per class (ZF Tables 4-5), vs depth (Table 7), training curves."""

import matplotlib.pyplot as plt
import numpy as np

from cnnvis.plotting import legend_outside, samples_with_interval, wrap_to_axes

TITLE_POINTS = 10  # Table 7's title, wrapped to its panel


def accuracy_vs_train_size(curves: dict, paper: dict, title: str):
    """``curves``: {dataset: {label: [(images per class, every fold's accuracy %), ...]}}, ours: each fold a dot, the
    mean with its 95 % t interval over folds; ``paper``: {dataset: {label: [(images per class, mean %, std %)]}},
    dashed with its std. One panel per dataset."""
    names = list(curves)
    labels = dict.fromkeys(label for source in (curves, paper) for per in source.values() for label in per)
    color = {label: f"C{i % 10}" for i, label in enumerate(labels)}  # one colour per label in every panel
    fig, axes = plt.subplots(1, len(names), figsize=(5.5 * len(names), 4.2), squeeze=False)
    for ax, name in zip(axes[0], names):
        for label, points in curves[name].items():
            if points:
                samples_with_interval(ax, [n for n, _ in points], [values for _, values in points], label,
                                      color=color[label])
        for label, points in paper.get(name, {}).items():
            if points:
                n, mean, std = np.asarray(points, dtype=float).T
                ax.errorbar(n, mean, yerr=std, fmt="--s", capsize=3, label=label, color=color[label])
        if not any(curves[name].values()):
            ax.text(0.5, 0.5, "not run: data absent (ours)", transform=ax.transAxes, ha="center", color="grey")
        ax.set(title=name, xlabel="training images per class", ylabel="mean per-class accuracy (%)", ylim=(0, 100))
        ax.grid(alpha=0.3)
    legend_outside(axes[0, -1], *unique_entries(axes[0]))
    fig.suptitle(f"{title}\nours: each fold a dot, mean with its 95 % t interval over folds; paper: mean +- std",
                 fontsize=10)
    fig.tight_layout()
    return fig


def unique_entries(axes) -> tuple[list, list]:
    """The legend entries of several panels, each label once."""
    entries = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            entries.setdefault(label, handle)
    return list(entries.values()), list(entries)


def accuracy_vs_depth(ours: dict, paper: dict, title: str):
    """``ours``: {label: (relative depths, every fold's accuracy % at each depth)}, each fold a dot and the mean with
    its 95 % t interval over folds; ``paper``: {label: (relative depths, mean %, std %)}, dashed with its std."""
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for label, (depth, samples) in ours.items():
        samples_with_interval(ax, depth, samples, label)
    for label, (depth, mean, std) in paper.items():
        ax.errorbar(depth, mean, yerr=std, fmt="--s", capsize=3, label=label)
    ax.set(xlabel="relative depth of the layer (layer / number of layers)", ylabel="mean per-class accuracy (%)",
           ylim=(0, 100), xlim=(0, 1.05))
    ax.grid(alpha=0.3)
    legend_outside(ax)
    fig.tight_layout()  # first: the legend narrows the axes, and the title wraps to the narrowed width
    ax.set_title(wrap_to_axes(ax, title, TITLE_POINTS), fontsize=TITLE_POINTS)
    fig.tight_layout()
    return fig


def training_curves(histories: dict, title: str):
    """``histories``: {label: DataFrame with epoch, train_top1, val_top1}; train dashed, validation solid."""
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for i, (label, h) in enumerate(histories.items()):
        color = f"C{i}"
        ax.plot(h["epoch"], 100 * h["train_top1"], "--o", color=color, label=f"{label}: train")
        ax.plot(h["epoch"], 100 * h["val_top1"], "-o", color=color, label=f"{label}: validation")
    ax.set(xlabel="epoch", ylabel="top-1 accuracy (%)", ylim=(0, 100), title=title)
    ax.grid(alpha=0.3)
    legend_outside(ax)
    fig.tight_layout()
    return fig
