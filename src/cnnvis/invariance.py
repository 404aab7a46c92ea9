"""Zeiler & Fergus 2014 Fig. 5: how feature vectors and the classifier change as an image is translated,
scaled or rotated.

For each transformation amount, the Euclidean distance between the feature vector of the original and of
the transformed image (at chosen layers), and the probability of the image's true label.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torchvision.transforms.v2 import functional as TF

from cnnvis.hooks import record_activations

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
                      fill=0.5) -> InvarianceCurves:
    """Distances at ``layers`` and p(label) for ``images`` (N, 3, H, W) under each of ``amounts`` of ``kind``."""
    model.eval()
    layers = list(layers)
    labels = torch.as_tensor(labels, dtype=torch.long)
    reference, _ = _features_and_probability(model, images, layers, labels)
    distances = {name: [] for name in layers}
    probability = []
    for amount in amounts:
        feats, p = _features_and_probability(model, transform(images, kind, amount, fill), layers, labels)
        for name in layers:
            distances[name].append((feats[name] - reference[name]).norm(dim=1))
        probability.append(p)
    return InvarianceCurves(kind, [float(a) for a in amounts],
                            {name: torch.stack(d, 1) for name, d in distances.items()},
                            {name: f.norm(dim=1) for name, f in reference.items()}, torch.stack(probability, 1))
