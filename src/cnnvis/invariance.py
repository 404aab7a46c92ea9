"""Zeiler & Fergus 2014 Fig. 5: how feature vectors and the classifier change as an image is translated,
scaled or rotated.

For each transformation amount, the Euclidean distance between the feature vector of the original and of
the transformed image (at chosen layers), and the probability of the image's true label; the Sec. 4.4 claims
decided from them per image.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torchvision.transforms.v2 import functional as TF

from cnnvis.claims import NOT_COMPARABLE, Claim, Evidence, Threshold, claim_seed, decided
from cnnvis.hooks import activations, record_activations
from cnnvis.stats import bootstrap_mean

KINDS = ("translate_y", "scale", "rotate")
IDENTITY = {"translate_y": 0.0, "scale": 1.0, "rotate": 0.0}
NAMES = {"translate_y": "vertical translation", "scale": "scaling", "rotate": "rotation"}
PAPER = "Zeiler & Fergus 2014"


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
    correct: torch.Tensor  # (N,) the untransformed image's top class is its label


@torch.no_grad()
def _features_and_probability(model, x, layers, labels):
    with record_activations(model, layers) as store:
        logits = model(x)
        feats = {name: store[name].flatten(1) for name in layers}
    return feats, logits.softmax(1).gather(1, labels[:, None])[:, 0], logits.argmax(1) == labels


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
                            torch.cat([p[2] for p in parts]), torch.cat([p[3] for p in parts]))


def _curves_of_batch(model, images, labels, kind, amounts, layers, fill):
    reference, _, correct = _features_and_probability(model, images, layers, labels)
    distances = {name: [] for name in layers}
    probability = []
    for amount in amounts:
        feats, p, _ = _features_and_probability(model, transform(images, kind, amount, fill), layers, labels)
        for name in layers:
            distances[name].append((feats[name] - reference[name]).norm(dim=1))
        probability.append(p)
    return ({name: torch.stack(d, 1) for name, d in distances.items()},
            {name: f.norm(dim=1) for name, f in reference.items()}, torch.stack(probability, 1), correct)


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


def relative_probability_drop(curve: InvarianceCurves) -> torch.Tensor:
    """(N,) ``probability_drop`` as a share of p(true label) at the identity: how much of its confidence the
    classifier loses on average over the sweep (comparable between confident and hesitant images)."""
    identity = [a for a, amount in enumerate(curve.amounts) if is_identity(curve.kind, amount)]
    return probability_drop(curve) / curve.probability[:, identity[0]].clamp_min(1e-12)


# ---------------------------------------------------------------- the Sec. 4.4 claims, decided over images

SOURCE_TOP = "Sec. 4.4, Fig. 5 (a2-c2 vs a3-c3)"
SOURCE_LINEAR = "Sec. 4.4, Fig. 5 (a3, b3)"
SOURCE_STABLE = "Sec. 4.4, Fig. 5 (a4, b4)"
SOURCE_ROTATION = "Sec. 4.4, Fig. 5 (c4)"
ROTATION = "The output is not invariant to rotation"


def level_and_margin(values, reference, level: Threshold, margin: Threshold, seed: int) -> list[Evidence]:
    """A claim's two conditions on a per-image measure: its mean against ``level``, and its paired difference to
    ``reference`` (a baseline on the same images) against ``margin``."""
    return [Evidence("bootstrap_mean", (values,), level, seed),
            Evidence("paired_difference", (values, reference), margin, seed + 1)]


def top_changes_less(curve: InvarianceCurves, early: str, late: str, unrelated: torch.Tensor,
                     much_less: float) -> Claim:
    """A small step changes ``late`` much less than ``early``: the mean per-image late / early ratio below
    ``much_less``, and below the ratio of two different images (paired per image)."""
    text = f"A small {NAMES[curve.kind]} changes layer-1 features dramatically but the top feature layer much less"
    seed = claim_seed(SOURCE_TOP, text)
    ratio = change_ratio(curve, early, late)
    below, vs_unrelated = Threshold(much_less, above=False), Threshold(0.0, above=False)
    evidence = level_and_margin(ratio, unrelated, below, vs_unrelated, seed)
    steps = " and ".join(f"{curve.amounts[a]:g}" for a in smallest_steps(curve))
    return decided(PAPER, SOURCE_TOP, text, "qualitative",
                   f"late / early relative change at {steps}: {evidence[0].estimate().format()}; minus the "
                   f"baseline: {evidence[1].estimate().format()}", len(ratio),
                   f"two different images' ratio: {bootstrap_mean(unrelated).format()}",
                   below.text("the mean per-image ratio") + "; and "
                   + vs_unrelated.text("its paired difference to the two-different-images ratio"), evidence)


def quasi_linear(curve: InvarianceCurves, late: str, early: str, min_r: float) -> Claim:
    """The top layer's change is quasi-linear in the amount: the mean per-image r of ``late`` above ``min_r``, and
    above ``early``'s r (paired; any rising curve has a high r, so r alone cannot say no)."""
    text = f"At the top layer the change is quasi-linear in {NAMES[curve.kind]}"
    seed = claim_seed(SOURCE_LINEAR, text)
    r_late, r_early = linearity(curve, late), linearity(curve, early)
    above, vs_early = Threshold(min_r), Threshold(0.0)
    evidence = level_and_margin(r_late, r_early, above, vs_early, seed)
    return decided(PAPER, SOURCE_LINEAR, text, "qualitative",
                   f"Pearson r of the late-layer distance with |change|: {evidence[0].estimate().format()}; minus "
                   f"the early layer's: {evidence[1].estimate().format()}", len(r_late),
                   f"the early layer's r: {bootstrap_mean(r_early).format()}",
                   above.text("the mean per-image r (identity point left out)") + "; and "
                   + vs_early.text("its paired difference to the early layer's r"), evidence)


def correct_drops(curve: InvarianceCurves) -> tuple[torch.Tensor, int]:
    """The relative p(true) drops of the images classified correctly at the identity, and how many were not."""
    keep = curve.correct.bool()
    return relative_probability_drop(curve)[keep], int((~keep).sum())


def output_claim(curve: InvarianceCurves, source: str, text: str, paper_number: str, rule: Threshold,
                 baseline: str) -> Claim:
    """A claim on the relative p(true) drop over ``curve``'s correctly classified images, by ``rule``; not
    comparable when none is correctly classified (there is no confidence to keep)."""
    drops, excluded = correct_drops(curve)
    what = "the mean relative drop of p(true) over the sweep (correctly classified images)"
    if len(drops) == 0:
        return Claim(PAPER, source, text, paper_number, f"no correctly classified image ({excluded} tried)", 0,
                     baseline, rule.text(what), NOT_COMPARABLE,
                     f"none of the {excluded} images is correctly classified at the identity")
    evidence = Evidence("bootstrap_mean", (drops,), rule, claim_seed(source, text))
    ours = (f"relative drop of p(true) over the {NAMES[curve.kind]} sweep: {evidence.estimate().format()}; "
            f"{excluded} of {len(curve.correct)} images excluded (misclassified at the identity)")
    return decided(PAPER, source, text, paper_number, ours, len(drops), baseline, rule.text(what), [evidence])


def stable_text(kind: str) -> str:
    return f"The output is stable to {NAMES[kind]}"


def drop_of(curve: InvarianceCurves, source: str, text: str) -> str:
    """The relative p(true) drop over ``curve``'s correctly classified images as the claim (source, text) that
    decides on it prints it (its seed, so the two intervals agree)."""
    drops, _ = correct_drops(curve)
    return bootstrap_mean(drops, claim_seed(source, text)).format() if len(drops) else "no correctly classified image"


def output_stable(curve: InvarianceCurves, max_drop: float, rotation: InvarianceCurves) -> Claim:
    """p(true) keeps its value under ``curve``'s transformation: the mean relative drop below ``max_drop``."""
    return output_claim(curve, SOURCE_STABLE, stable_text(curve.kind), "qualitative", Threshold(max_drop, above=False),
                        f"rotation's drop: {drop_of(rotation, SOURCE_ROTATION, ROTATION)}")


def output_not_invariant(curve: InvarianceCurves, min_drop: float, translation: InvarianceCurves) -> Claim:
    """p(true) falls under rotation: the mean relative drop above ``min_drop``."""
    return output_claim(curve, SOURCE_ROTATION, ROTATION, "qualitative", Threshold(min_drop),
                        f"{NAMES[translation.kind]}'s drop: "
                        f"{drop_of(translation, SOURCE_STABLE, stable_text(translation.kind))}")


def symmetric_exception(curve: InvarianceCurves | None, max_drop: float, rotation: InvarianceCurves) -> Claim:
    """...except for rotationally symmetric objects: over every loaded image of those classes (``curve``: a
    rotation sweep of them, None when there is none), the mean relative drop below ``max_drop``; one image gives
    no interval, so inconclusive (n = 1)."""
    text = "...except for rotationally symmetric objects (e.g. the paper's entertainment center)"
    paper = "qualitative (1 example: entertainment center)"
    baseline = f"every sampled image's rotation drop: {drop_of(rotation, SOURCE_ROTATION, ROTATION)}"
    if curve is None:
        rule = Threshold(max_drop, above=False)
        return Claim(PAPER, SOURCE_ROTATION, text, paper, "no image of these classes among the loaded images", 0,
                     baseline, rule.text("the mean relative drop of p(true) over the rotation sweep"), NOT_COMPARABLE,
                     "no image of the rotationally symmetric classes among the loaded images")
    return output_claim(curve, SOURCE_ROTATION, text, paper, Threshold(max_drop, above=False), baseline)


def claims(by: dict, unrelated: torch.Tensor, symmetric: InvarianceCurves | None, early: str, late: str,
           much_less: float, linear_r: float, stable_drop: float) -> list[Claim]:
    """Every Sec. 4.4 claim decided over the images of ``by`` (kind -> InvarianceCurves of the same images)."""
    rows = [top_changes_less(c, early, late, unrelated, much_less) for c in by.values()]
    rows += [quasi_linear(by[kind], late, early, linear_r) for kind in ("translate_y", "scale")]
    rows += [output_stable(by[kind], stable_drop, by["rotate"]) for kind in ("translate_y", "scale")]
    rows.append(output_not_invariant(by["rotate"], stable_drop, by["translate_y"]))
    rows.append(symmetric_exception(symmetric, stable_drop, by["rotate"]))
    return rows
