"""Zeiler & Fergus 2014 Fig. 5: how feature vectors and the classifier change as an image is translated,
scaled or rotated.

For each transformation amount, the Euclidean distance between the feature vector of the original and of
the transformed image (at chosen layers), and the probability of the image's true label.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torchvision.transforms.v2 import functional as TF

from cnnvis.hooks import activations, record_activations
from cnnvis.stats import bootstrap_mean, paired_difference

KINDS = ("translate_y", "scale", "rotate")
IDENTITY = {"translate_y": 0.0, "scale": 1.0, "rotate": 0.0}


def transform(images: torch.Tensor, kind: str, amount: float, fill) -> torch.Tensor:
    """``images`` (N, 3, H, W) moved down by ``amount`` px (translate_y), zoomed about the centre by ``amount``
    (scale) or rotated by ``amount`` degrees (rotate); uncovered pixels take the colour ``fill``."""
    if kind not in KINDS:
        raise ValueError(f"unknown transformation {kind!r}; choose one of {', '.join(KINDS)}")
    translate = [0, int(round(amount))] if kind == "translate_y" else [0, 0]
    return TF.affine(images, angle=float(amount) if kind == "rotate" else 0.0, translate=translate,
                     scale=float(amount) if kind == "scale" else 1.0, shear=[0.0, 0.0],
                     interpolation=TF.InterpolationMode.BILINEAR, fill=[float(v) for v in torch.as_tensor(fill).flatten()])


@dataclass
class InvarianceCurves:
    """Per image (rows) and transformation amount (columns)."""

    kind: str
    amounts: list[float]
    distances: dict[str, torch.Tensor]  # layer -> (N, A) Euclidean distance to the untransformed image's features
    reference_norm: dict[str, torch.Tensor]  # layer -> (N,) norm of the untransformed image's features
    probability: torch.Tensor  # (N, A) probability of the true label


@torch.no_grad()
def _features_and_probability(model, x, layers, labels):
    with record_activations(model, layers) as store:
        logits = model(x)
        feats = {name: store[name].flatten(1) for name in layers}
    return feats, logits.softmax(1).gather(1, labels[:, None])[:, 0]


@torch.no_grad()
def invariance_curves(model: nn.Module, images: torch.Tensor, labels, kind: str, amounts, layers,
                      fill=0.5, batch: int = 32) -> InvarianceCurves:
    """Distances at ``layers`` and p(label) for ``images`` (N, 3, H, W) under each of ``amounts`` of ``kind``,
    ``batch`` images at a time (an early layer's features of many images would not fit in memory at once)."""
    model.eval()
    layers = list(layers)
    labels = torch.as_tensor(labels, dtype=torch.long)
    parts = [_curves_of_batch(model, images[s:s + batch], labels[s:s + batch], kind, amounts, layers, fill)
             for s in range(0, len(images), batch)]
    return InvarianceCurves(kind, [float(a) for a in amounts],
                            {name: torch.cat([p[0][name] for p in parts]) for name in layers},
                            {name: torch.cat([p[1][name] for p in parts]) for name in layers},
                            torch.cat([p[2] for p in parts]))


def _curves_of_batch(model, images, labels, kind, amounts, layers, fill):
    reference, _ = _features_and_probability(model, images, layers, labels)
    distances = {name: [] for name in layers}
    probability = []
    for amount in amounts:
        feats, p = _features_and_probability(model, transform(images, kind, amount, fill), layers, labels)
        for name in layers:
            distances[name].append((feats[name] - reference[name]).norm(dim=1))
        probability.append(p)
    return ({name: torch.stack(d, 1) for name, d in distances.items()},
            {name: f.norm(dim=1) for name, f in reference.items()}, torch.stack(probability, 1))


# ---------------------------------------------------------------- the rules of the Sec. 4.4 claims, per image


def is_identity(kind: str, amount: float) -> bool:
    """``amount`` leaves the image as it is (rotation by a multiple of 360 degrees included)."""
    return amount % 360 == 0 if kind == "rotate" else amount == IDENTITY[kind]


def moved(curve: InvarianceCurves) -> list[int]:
    """Indices of the amounts that change the image: the identity point is 0 by construction and says nothing."""
    keep = [a for a, amount in enumerate(curve.amounts) if not is_identity(curve.kind, amount)]
    if len(keep) < 2:
        raise ValueError(f"{curve.kind}: give at least two amounts besides the identity {IDENTITY[curve.kind]:g}")
    return keep


def relative_distance(curve: InvarianceCurves, layer: str) -> torch.Tensor:
    """(N, A) ||f(x) - f(T(x))|| / ||f(x)||: comparable across layers of different size and scale."""
    return curve.distances[layer] / curve.reference_norm[layer].clamp_min(1e-12)[:, None]


def smallest_steps(curve: InvarianceCurves) -> list[int]:
    """Indices of the non-identity amounts closest to the identity (-10 and 10 px, x1.1, 15 degrees)."""
    keep = moved(curve)
    step = min(abs(curve.amounts[a] - IDENTITY[curve.kind]) for a in keep)
    return [a for a in keep if abs(curve.amounts[a] - IDENTITY[curve.kind]) == step]


def change_ratio(curve: InvarianceCurves, early: str, late: str) -> torch.Tensor:
    """(N,) relative distance at ``late`` over that at ``early`` at the smallest step (mean over its signs):
    < 1 when the late layer changes less."""
    steps = smallest_steps(curve)
    return (relative_distance(curve, late)[:, steps] / relative_distance(curve, early)[:, steps].clamp_min(1e-12)).mean(1)


@torch.no_grad()
def unrelated_ratio(model: nn.Module, images: torch.Tensor, early: str, late: str, seed: int = 0) -> torch.Tensor:
    """(N,) the late / early relative distance between each image and a different one of ``images``: the ratio
    of a total change, which a transformation's ratio must beat before the late layer can be called invariant."""
    feats = [activations(model, chunk, [early, late]) for chunk in images.split(32)]
    f = {layer: torch.cat([b[layer].flatten(1) for b in feats]) for layer in (early, late)}
    cycle = torch.as_tensor(np.random.default_rng(seed).permutation(len(images)))
    other = torch.empty_like(cycle)
    other[cycle] = torch.roll(cycle, -1)  # one random cycle: each image is paired with a different one
    rel = {layer: (f[layer] - f[layer][other]).norm(dim=1) / f[layer].norm(dim=1).clamp_min(1e-12) for layer in f}
    return rel[late] / rel[early].clamp_min(1e-12)


def linearity(curve: InvarianceCurves, layer: str) -> torch.Tensor:
    """(N,) Pearson r of the distance at ``layer`` with |amount - identity| over the amounts that change the image
    (the identity point, 0 by construction, would make any rising curve look linear)."""
    keep = moved(curve)
    size = torch.tensor([abs(curve.amounts[a] - IDENTITY[curve.kind]) for a in keep], dtype=torch.float64)
    d = curve.distances[layer][:, keep].double()
    size, d = size - size.mean(), d - d.mean(1, keepdim=True)
    return (d @ size) / (d.norm(dim=1) * size.norm()).clamp_min(1e-12)


def probability_drop(curve: InvarianceCurves) -> torch.Tensor:
    """(N,) p(true label) of the untransformed image minus its mean over the whole sweep of changed images."""
    identity = [a for a, amount in enumerate(curve.amounts) if is_identity(curve.kind, amount)]
    if not identity:
        raise ValueError(f"{curve.kind}: the amounts must include the identity {IDENTITY[curve.kind]:g}")
    return curve.probability[:, identity[0]] - curve.probability[:, moved(curve)].mean(1)


# ---------------------------------------------------------------- the decisions (estimate over images, rule holds)


def top_changes_less(curve: InvarianceCurves, early: str, late: str, unrelated: torch.Tensor, much_less: float):
    """Ratio estimate, its paired difference to the two-different-images ratio, and whether the late layer changes
    much less: the ratio's interval below ``much_less`` and the difference's below 0."""
    ratio = change_ratio(curve, early, late)
    est, vs_unrelated = bootstrap_mean(ratio), paired_difference(ratio, unrelated)
    return est, vs_unrelated, est.below(much_less) and vs_unrelated.below(0)


def quasi_linear(curve: InvarianceCurves, late: str, early: str, min_r: float):
    """Mean per-image r of ``late`` with its interval, its paired difference to ``early``'s r, and whether both
    intervals clear their bars: above ``min_r``, and above 0 (the top layer is more linear than the first,
    whose change the paper calls dramatic; any rising curve has a high r, so r alone cannot say no)."""
    r_late, r_early = linearity(curve, late), linearity(curve, early)
    est, vs_early = bootstrap_mean(r_late), paired_difference(r_late, r_early)
    return est, vs_early, est.above(min_r) and vs_early.above(0)


def output_stable(curve: InvarianceCurves, max_drop: float):
    """Mean p(true) drop over the sweep, and whether its interval lies below ``max_drop``."""
    est = bootstrap_mean(probability_drop(curve))
    return est, est.below(max_drop)


def output_not_invariant(curve: InvarianceCurves, margin: float):
    """Mean p(true) drop over the sweep, and whether its interval lies above ``margin``."""
    est = bootstrap_mean(probability_drop(curve))
    return est, est.above(margin)
