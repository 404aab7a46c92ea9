"""What an optimized image maximizes, for activation maximization (``cnnvis.activation_max``, pixel space) and
feature visualization (``cnnvis.featurevis``, Lucid's parametrizations) alike.

An objective gives one value per batch element from the activations of named layers (None: the logits), so many
units optimize as one batch; objectives add and scale (``channel("stage4", [3, 3]) + 10 * diversity("stage4")``):

- ``channel``: a channel's mean activation over its map (Yosinski's and Lucid's "channel");
- ``unit``: one spatial unit of a channel, the map's centre unless ``position`` (Erhan 2009, Yosinski 2015;
  Lucid's "neuron");
- ``class_logit``: a class's pre-softmax score (Simonyan 2013);
- ``direction``: the activation vectors' mean dot product with a direction;
- ``diversity``: how much the images of a group differ in style (Olah et al. 2017).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from cnnvis.hooks import forward_recorded, record_activations


@dataclass(frozen=True)
class Objective:
    """One value per batch element from the activations of ``layers`` (None: the logits); add and scale them."""

    layers: frozenset
    value: Callable[[dict], torch.Tensor]  # {layer or None: activation} -> (B,)
    name: str
    batch: Optional[int] = None  # how many images it scores (one channel or class each); None: any number

    def __call__(self, acts: dict) -> torch.Tensor:
        return self.value(acts)

    def __len__(self) -> int:
        if self.batch is None:
            raise TypeError(f"{self.name} scores a batch of any size: it does not say how many images to optimize")
        return self.batch

    def __add__(self, other: "Objective") -> "Objective":
        return Objective(self.layers | other.layers, lambda acts: self(acts) + other(acts),
                         f"{self.name} + {other.name}", self.batch if self.batch is not None else other.batch)

    def __mul__(self, weight: float) -> "Objective":
        return Objective(self.layers, lambda acts: weight * self(acts), f"{weight:g} * {self.name}", self.batch)

    __rmul__ = __mul__

    def __sub__(self, other: "Objective") -> "Objective":
        return self + (-1.0) * other


def _indices(values: Sequence[int]) -> list[int]:
    indices = [int(v) for v in values]
    if not indices:
        raise ValueError("an objective needs at least one channel or class (one per batch element)")
    return indices


def _per_element(act: torch.Tensor, index: Sequence[int], layer) -> torch.Tensor:
    """``act[b, index[b]]`` for every batch element b (one channel or class per element)."""
    if len(index) != act.shape[0]:
        raise ValueError(f"{len(index)} indices for a batch of {act.shape[0]}: give one channel/class per image")
    if max(index) >= act.shape[1] or min(index) < 0:
        what = "classes" if layer is None else f"channels of {layer}"
        raise IndexError(f"index {list(index)} out of range: the model has {act.shape[1]} {what}")
    rows = torch.arange(act.shape[0], device=act.device)
    return act[rows, torch.as_tensor(index, device=act.device)]


def channel(layer: str, channels: Sequence[int]) -> Objective:
    """The mean over the map of channel ``channels[b]`` for image b; a layer without a map (fully connected)
    gives the activation itself."""
    channels = _indices(channels)

    def mean(acts):
        picked = _per_element(acts[layer], channels, layer)
        return picked if picked.ndim == 1 else picked.flatten(1).mean(1)
    return Objective(frozenset([layer]), mean, f"channel {layer}", len(channels))


def unit(layer: str, channels: Sequence[int], position: Optional[tuple[int, int]] = None) -> Objective:
    """The activation at ``position`` (row, col; None: the map's centre) of channel ``channels[b]`` for image b;
    a layer without a map (fully connected) gives the activation itself."""
    channels = _indices(channels)

    def at_position(acts):
        maps = _per_element(acts[layer], channels, layer)
        if maps.ndim == 1:
            return maps
        r, c = position if position is not None else (maps.shape[-2] // 2, maps.shape[-1] // 2)
        return maps[:, r, c]
    return Objective(frozenset([layer]), at_position, f"unit {layer}@{position or 'centre'}", len(channels))


def class_logit(classes: Sequence[int]) -> Objective:
    """The pre-softmax score of class ``classes[b]`` for image b (Simonyan 2013): the probability could rise by
    lowering the other classes' scores."""
    classes = _indices(classes)
    return Objective(frozenset([None]), lambda acts: _per_element(acts[None], classes, None), "class logit",
                     len(classes))


def direction(layer: str, vectors: torch.Tensor) -> Objective:
    """The mean over positions of the dot product of the activation vector with ``vectors[b]`` (B, C) or (C,)."""
    vectors = torch.as_tensor(vectors, dtype=torch.float32)

    def along(acts):
        act = acts[layer]
        v = vectors.to(act.device)
        if v.shape[-1] != act.shape[1]:
            raise ValueError(f"direction of {v.shape[-1]} values for {layer} with {act.shape[1]} channels")
        v = v.expand(act.shape[0], -1).view(act.shape[0], act.shape[1], *([1] * (act.ndim - 2)))
        return (act * v).sum(1).flatten(1).mean(1)
    return Objective(frozenset([layer]), along, f"direction {layer}", len(vectors) if vectors.ndim == 2 else None)


def gram_dissimilarity(act: torch.Tensor, groups: Optional[Sequence[int]] = None) -> torch.Tensor:
    """Per image, 1 - the mean cosine similarity of its Gram matrix with those of the other images of its group.

    The Gram matrix (channels x channels, summed over positions) describes an image's style and not where
    things are, so images that differ only by a shift still count as the same (Olah et al. 2017, "Diversity").
    Zero when the images of a group are identical; an image alone in its group gets 0.
    """
    flat = act.flatten(2)
    grams = F.normalize((flat @ flat.transpose(1, 2)).flatten(1), dim=1)
    similarity = grams @ grams.T
    group = torch.as_tensor(groups if groups is not None else [0] * act.shape[0], device=act.device)
    others = (group[:, None] == group[None, :]) & ~torch.eye(act.shape[0], dtype=torch.bool, device=act.device)
    n_others = others.sum(1)
    mean_similarity = (similarity * others).sum(1) / n_others.clamp_min(1)
    return torch.where(n_others > 0, 1 - mean_similarity, torch.zeros_like(mean_similarity))


def diversity(layer: str, groups: Optional[Sequence[int]] = None) -> Objective:
    """``gram_dissimilarity`` of ``layer`` within each group of the batch (all one group when ``groups`` is None)."""
    return Objective(frozenset([layer]), lambda acts: gram_dissimilarity(acts[layer], groups), f"diversity {layer}")


def objective_values(model: nn.Module, x: torch.Tensor, objective: Objective) -> torch.Tensor:
    """The (B,) objective of a batch, computing the network only as deep as its deepest layer needs."""
    layers = [name for name in objective.layers if name is not None]
    needs_logits = None in objective.layers
    with record_activations(model, layers, stop_early=not needs_logits, detach=False) as store:
        logits = forward_recorded(model, x, store)
        return objective({**store, None: logits})
