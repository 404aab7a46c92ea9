"""Zeiler & Fergus 2014's correspondence analysis (Sec. 4.3, Table 1): mask the same part in several images and
score how consistently the features change, as the mean normalized Hamming distance between the images' sign
changes (Delta), per image so that intervals and comparisons run over images."""

from __future__ import annotations

from itertools import permutations

import numpy as np
import pandas as pd
import torch

from cnnvis.hooks import activations
from cnnvis.stats import paired_difference

PARTS = ("right_eye", "left_eye", "nose")


def mask(images: torch.Tensor, boxes, fill) -> torch.Tensor:
    """Copies of ``images`` (N, 3, H, W) with box (x0, y0, x1, y1) ``boxes[i]`` of image i set to ``fill``."""
    out = images.clone()
    for i, (x0, y0, x1, y1) in enumerate(np.asarray(boxes, dtype=int)):
        out[i, :, y0:y1, x0:x1] = torch.as_tensor(fill, dtype=out.dtype).view(-1, 1, 1)
    return out


def sign_changes(model, images, masked, layers) -> dict[str, torch.Tensor]:
    """sign(x_i - x~_i) at each layer, flattened: {layer: (N, d)}."""
    a, b = activations(model, images, layers), activations(model, masked, layers)
    return {name: torch.sign(a[name] - b[name]).flatten(1) for name in layers}


def per_image_delta(signs: torch.Tensor, changed_only: bool = False) -> torch.Tensor:
    """(N,) image i's mean over j != i of the normalized Hamming distance between rows i and j of ``signs``; their
    mean is Delta. ``changed_only``: over the features the mask changed in image i or j only, so that the many
    features no mask touches (sign 0 in both: counted as agreeing) do not dilute the score."""
    n = len(signs)
    if n < 2:
        raise ValueError("the correspondence score compares images: give experiment.images at least 2 images")
    rates = torch.zeros(n, n)
    for i, j in permutations(range(n), 2):
        differ = signs[i] != signs[j]
        if changed_only:
            differ = differ[(signs[i] != 0) | (signs[j] != 0)]
        rates[i, j] = differ.float().mean() if differ.numel() else 0.0
    return rates.sum(1) / (n - 1)


def delta(signs: torch.Tensor, changed_only: bool = False) -> float:
    """Delta: the mean over ordered pairs i != j of the normalized Hamming distance between rows of ``signs``."""
    return float(per_image_delta(signs, changed_only).mean())


def location_scores(model, x, boxes: dict, random_boxes: list, layers, fill) -> pd.DataFrame:
    """Per image, location (each part, and ``random``: averaged over ``random_boxes``, each the same box in every
    image) and layer: the per-image score, over all features and over the changed ones, and the share changed."""
    rows = []
    trials = [(p, b) for p, b in boxes.items()] + [("random", [box] * len(x)) for box in random_boxes]
    for location, b in trials:
        for layer, signs in sign_changes(model, x, mask(x, b, fill), list(layers)).items():
            changed = (signs != 0).float().mean(1)
            for i, (d, dc, c) in enumerate(zip(per_image_delta(signs), per_image_delta(signs, True), changed)):
                rows.append((location, layer, i, float(d), float(dc), float(c)))
    df = pd.DataFrame(rows, columns=["location", "layer", "image", "delta", "delta_changed", "changed_share"])
    return df.groupby(["location", "layer", "image"], as_index=False).mean()  # random: the mean over its boxes


def parts_beat_random(scores: pd.DataFrame, layer: str, column: str = "delta") -> tuple[dict, bool]:
    """{part: paired difference part - random over images} at ``layer``, and whether every part's interval lies
    below 0 (its masks change features more consistently across images than random boxes do)."""
    at = scores[scores.layer == layer]
    random = at[at.location == "random"].sort_values("image")[column].to_numpy()
    diffs = {p: paired_difference(at[at.location == p].sort_values("image")[column].to_numpy(), random) for p in PARTS}
    return diffs, all(d.below(0) for d in diffs.values())
