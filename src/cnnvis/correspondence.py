"""Zeiler & Fergus 2014's correspondence analysis (Sec. 4.3, Table 1): mask the same part in several images and
score how consistently the features change, as the mean normalized Hamming distance between the images' sign
changes (Delta), per image so that intervals and comparisons run over images; random regions at a random place in
each image are the baseline, and Table 1's two claims (layer 5: parts below random; layer 7: parts and random
alike) are decided from the per-image scores."""

from __future__ import annotations

from dataclasses import replace
from itertools import permutations

import numpy as np
import pandas as pd
import torch

from cnnvis.claims import Claim, Equivalence, Evidence, Threshold, all_of, claim_seed, decided
from cnnvis.hooks import activations
from cnnvis.stats import bootstrap_mean, paired_difference

PARTS = ("right_eye", "left_eye", "nose")
PAPER = "Zeiler & Fergus 2014"
# Table 1 of the paper: mean feature sign change Delta_l, mean over their repeats (± their spread, not transcribed)
PAPER_LAYER5 = {"right_eye": 0.067, "left_eye": 0.069, "nose": 0.079, "random": 0.107}
PAPER_LAYER7 = {"right_eye": 0.069, "left_eye": 0.068, "nose": 0.069, "random": 0.073}


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


def random_regions(n_images: int, size: int, w: int, h: int, repeats: int, rng) -> list[list[list[int]]]:
    """``repeats`` draws of a ``w`` x ``h`` box (x0, y0, x1, y1) at a uniform random place in each of ``n_images``
    images of ``size`` px: a new place per image, as the parts' boxes move from image to image."""
    draws = []
    for _ in range(repeats):
        x0, y0 = rng.integers(0, size - w + 1, n_images), rng.integers(0, size - h + 1, n_images)
        draws.append([[int(a), int(b), int(a + w), int(b + h)] for a, b in zip(x0, y0)])
    return draws


def location_scores(model, x, boxes: dict, random_boxes: list, layers, fill) -> pd.DataFrame:
    """Per image, location (each part, and ``random``: averaged over the draws of ``random_boxes``, each a box per
    image) and layer: the per-image score, over all features and over the changed ones, and the share changed."""
    rows = []
    trials = [(p, b) for p, b in boxes.items()] + [("random", b) for b in random_boxes]
    for location, b in trials:
        for layer, signs in sign_changes(model, x, mask(x, b, fill), list(layers)).items():
            changed = (signs != 0).float().mean(1)
            for i, (d, dc, c) in enumerate(zip(per_image_delta(signs), per_image_delta(signs, True), changed)):
                rows.append((location, layer, i, float(d), float(dc), float(c)))
    df = pd.DataFrame(rows, columns=["location", "layer", "image", "delta", "delta_changed", "changed_share"])
    return df.groupby(["location", "layer", "image"], as_index=False).mean()  # random: the mean over its boxes


def part_and_random_scores(scores: pd.DataFrame, layer: str, column: str = "delta") -> tuple[dict, np.ndarray]:
    """({part: per-image scores}, random regions' per-image scores) at ``layer``, both in image order."""
    at = scores[scores.layer == layer]
    values = lambda location: at[at.location == location].sort_values("image")[column].to_numpy()
    return {p: values(p) for p in PARTS}, values("random")


def parts_beat_random(scores: pd.DataFrame, layer: str, column: str = "delta") -> tuple[dict, str]:
    """{part: paired difference part - random over images} at ``layer``, and the answer of layer 5's rule over all
    parts (every part's interval below 0: its masks change features more consistently across images than random
    regions do): the exploratory table's summary; the claims decide with ``layer5_claim``."""
    parts, random = part_and_random_scores(scores, layer, column)
    diffs = {p: paired_difference(v, random) for p, v in parts.items()}
    return diffs, all_of([Threshold(0.0, above=False).decide(d) for d in diffs.values()]).verdict


def parts_named(claim: Claim) -> Claim:
    """``claim`` (one condition per part, in PARTS' order) with its reason naming the parts that decided it."""
    decisions = [(p.replace("_", " "), e.decide()) for p, e in zip(PARTS, claim.evidence)]
    return replace(claim, reason="; ".join(f"{p}: {d.reason}" for p, d in decisions if d.verdict == claim.verdict))


def paper_row(table: dict) -> str:
    return ", ".join(f"{p.replace('_', ' ')} {table[p]:.3f}" for p in PARTS) + f" vs random {table['random']:.3f}"


LAYER5 = ("Masking the same part in different images changes layer-5 features more consistently than masking random "
          "regions")
LAYER7 = ("At layer 7 masking a part changes the features about as consistently as masking a random region (the "
          "scores are more similar)")


def per_part(evidence: list[Evidence]) -> str:
    return "; ".join(f"{p.replace('_', ' ')} {e.estimate().format()}" for p, e in zip(PARTS, evidence))


def layer5_claim(scores: pd.DataFrame, layer: str) -> Claim:
    """Table 1, layer 5: every part's per-image Delta below the random regions', paired over images."""
    parts, random = part_and_random_scores(scores, layer)
    seed = claim_seed("Table 1, Sec. 4.3", LAYER5)
    rule = Threshold(0.0, above=False)
    evidence = [Evidence("paired_difference", (v, random), rule, seed + k) for k, v in enumerate(parts.values())]
    ours = f"`{layer}`: Δ(part) − Δ(random): {per_part(evidence)}"
    rule_text = "for every part: " + rule.text("the per-image paired difference Δ(part) − Δ(random)")
    return parts_named(decided(PAPER, "Table 1, Sec. 4.3", LAYER5, f"layer 5: {paper_row(PAPER_LAYER5)}", ours,
                               len(random), f"random regions: Δ = {bootstrap_mean(random).format()}", rule_text,
                               evidence))


def layer7_claim(scores: pd.DataFrame, layer: str, margin: float) -> Claim:
    """Table 1, layer 7: every part's per-image Delta within ``margin`` (a share) of the random regions', as the
    mean over images of Δ(part) / Δ(random) − 1 (Delta's scale differs between networks; the relative gap does
    not)."""
    parts, random = part_and_random_scores(scores, layer)
    seed = claim_seed("Table 1, Sec. 4.3", LAYER7)
    rule = Equivalence(margin)
    evidence = [Evidence("bootstrap_mean", (v / random - 1,), rule, seed + k) for k, v in enumerate(parts.values())]
    relative = ", ".join(f"{p.replace('_', ' ')} {PAPER_LAYER7[p] / PAPER_LAYER7['random'] - 1:+.3f}" for p in PARTS)
    paper = f"layer 7: {paper_row(PAPER_LAYER7)} (relative: {relative})"
    ours = f"`{layer}`: Δ(part) / Δ(random) − 1: {per_part(evidence)}"
    rule_text = "for every part: " + rule.text("the per-image Δ(part) / Δ(random) − 1")
    return parts_named(decided(PAPER, "Table 1, Sec. 4.3", LAYER7, paper, ours, len(random),
                               f"random regions: Δ = {bootstrap_mean(random).format()}", rule_text, evidence))
