"""Which images and feature maps an experiment shows: the first image of each wanted class, a seeded sample of
labelled images, a pick of feature maps that fire, how pure a map's top images are in class, and whether a
dataset's labels are the model's ImageNet classes."""

from __future__ import annotations

import numpy as np

from cnnvis.data import imagenet_classes
from cnnvis.mining import TopK


def pick_examples(labels: np.ndarray, classes) -> list[int]:
    """The first image of each wanted class; without any of them (other data), the first labelled images."""
    picks = [int(np.flatnonzero(labels == c)[0]) for c in classes if (labels == c).any()]
    if not picks:
        picks = np.flatnonzero(labels >= 0)[: len(classes)].tolist()
    return picks


def pick_images(labels: np.ndarray, classes, n: int) -> list[int]:
    """The first image of each wanted class (in the order given), then the dataset's other images in order, n in
    all (an unlabelled folder gives its first n)."""
    wanted = [int(np.flatnonzero(labels == c)[0]) for c in classes if (labels == c).any()]
    others = [i for i in range(len(labels)) if i not in wanted]
    return (wanted + others)[:n]


def pick_labelled_images(labels: np.ndarray, classes, n: int = 5) -> list[int]:
    """The first image of each wanted class, topped up with the first other labelled images."""
    picks = [int(np.flatnonzero(labels == c)[0]) for c in classes if (labels == c).any()]
    rest = [int(i) for i in np.flatnonzero(labels >= 0) if i not in picks]
    return (picks + rest)[:n]


def sample_labelled_images(labels: np.ndarray, n: int, seed: int) -> list[int]:
    """A seeded sample of ``n`` labelled images (all of them when there are fewer)."""
    labelled = np.flatnonzero(labels >= 0)
    if n < 2:
        raise ValueError(f"experiment.sample_images must be at least 2 for an interval over images (got {n})")
    rng = np.random.default_rng(seed)
    return sorted(int(i) for i in rng.choice(labelled, min(n, len(labelled)), replace=False))


def pick_maps(top: TopK, n: int, rng: np.random.Generator, channels=None) -> list[int]:
    """``channels`` if given, else ``n`` random feature maps among those whose k-th activation is positive."""
    if channels is not None:
        bad = [c for c in channels if not 0 <= c < len(top.values)]
        if bad:
            raise IndexError(f"channels {bad} out of range: the layer has {len(top.values)} feature maps")
        return list(channels)
    firing = np.flatnonzero((top.values[:, -1] > 0).numpy())
    pool = firing if len(firing) >= n else np.arange(len(top.values))
    return sorted(rng.choice(pool, size=min(n, len(pool)), replace=False).tolist())


def label_purity(labels: np.ndarray) -> float:
    """Share of the top-k images that belong to their most frequent class."""
    return np.bincount(labels).max() / len(labels)


def chance_purity(labels: np.ndarray, k: int, rng: np.random.Generator, draws: int = 2000) -> float:
    """``label_purity`` of ``k`` images drawn at random from ``labels``, averaged over ``draws`` draws."""
    return float(np.mean([label_purity(rng.choice(labels, k, replace=False)) for _ in range(draws)]))


def labels_are_model_classes(images, n_classes: int) -> bool:
    """True when the dataset's labels index the model's ImageNet classes and some image has one."""
    return n_classes == 1000 and list(images.classes) == imagenet_classes() and bool((images.labels >= 0).any())
