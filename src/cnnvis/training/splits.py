"""Datasets for training: the largest classes or chosen ones (relabelled 0..k-1), a held-out set split into
validation and test (or a per-class train / validation / test split), the data randomization test's shuffled
labels, and the epoch chosen on validation."""

from __future__ import annotations

from typing import Optional

import numpy as np
from torch.utils.data import Dataset

from cnnvis.data import per_class_split


def largest_classes(index, classes: Optional[int]):
    """The ``classes`` classes with the most images (ties by name), relabelled 0..classes-1; None: all."""
    if classes is None:
        return index
    counts = np.bincount(index.labels, minlength=len(index.classes))
    if classes > int((counts > 0).sum()):
        raise ValueError(f"experiment.classes={classes} but {index.name} has only {int((counts > 0).sum())} classes")
    chosen = sorted(np.flatnonzero(counts > 0), key=lambda c: (-counts[c], index.classes[c]))[:classes]
    return keep_classes(index, chosen)


def keep_classes(index, chosen):
    """Only the images of the class ids ``chosen``, relabelled 0..len-1 in name order."""
    from cnnvis.data import ImageIndex

    chosen = sorted(chosen, key=lambda c: index.classes[c])
    remap = {int(c): k for k, c in enumerate(chosen)}
    keep = [i for i, y in enumerate(index.labels) if int(y) in remap]
    return ImageIndex(index.name, [index.paths[i] for i in keep],
                      np.asarray([remap[int(index.labels[i])] for i in keep], dtype=np.int64),
                      [index.classes[c] for c in chosen])


def split_held_out(labels, idx, val_per_class: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Per class, ``val_per_class`` random positions of ``idx`` for validation and the rest for test (disjoint)."""
    labels, idx = np.asarray(labels), np.asarray(idx)
    rng = np.random.default_rng([seed, 7919])  # its own stream: the train/held-out split's draws stay unchanged
    val, test = [], []
    for y in np.unique(labels[idx]):
        members = rng.permutation(idx[labels[idx] == y])
        val += members[:val_per_class].tolist()
        test += members[val_per_class:].tolist()
    return np.sort(np.asarray(val, dtype=np.int64)), np.sort(np.asarray(test, dtype=np.int64))


class ShuffledLabels(Dataset):
    """The data randomization test's training set (Zhang et al. 2017, Adebayo et al. 2018): every image keeps
    its augmentation, the labels are permuted among the images (seeded), so class frequencies stay and the
    link between an image and its label is gone."""

    def __init__(self, dataset: Dataset, labels, seed: int = 0):
        self.dataset = dataset
        self.labels = np.random.default_rng([seed, 104_729]).permutation(np.asarray(labels))

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, i):
        return self.dataset[i][0], int(self.labels[i])


def random_split(n: int, fractions, seed: int) -> list[np.ndarray]:
    """Indices 0..n-1 shuffled (seeded) and cut into consecutive parts of the given fractions, the last taking
    the rest: torch's ``random_split`` protocol (not stratified by class), as the replication notes used."""
    fractions = np.asarray(fractions, dtype=float)
    if np.any(fractions <= 0) or abs(fractions.sum() - 1) > 1e-6:
        raise ValueError(f"split fractions must be positive and sum to 1, got {list(fractions)}")
    order = np.random.default_rng(seed).permutation(n)
    cuts = np.floor(np.cumsum(fractions[:-1]) * n).astype(int)
    return [np.sort(part) for part in np.split(order, cuts)]


def best_epoch(history) -> int:
    """The epoch of a training history (``fit``'s) with the highest validation top-1 (the first of a tie): model
    selection on validation alone."""
    return int(history.loc[history.val_top1.idxmax()].epoch)
