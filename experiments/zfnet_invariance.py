"""Zeiler & Fergus 2014 Fig. 5: feature invariance to vertical translation, scale and rotation at an early and a
late layer, and the classifier's probability of the true label.

The figure shows the paper's 5 images; the claims are decided over a seeded sample of ``sample_images`` images
of the dataset, per image, with 95 % intervals over images (cnnvis.stats), and again on ``control_images`` of them
with the same architecture randomly initialised (the random-weights control).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from cnnvis.claims import with_control
from cnnvis.config import ExperimentConfig
from cnnvis.examples import pick_labelled_images, sample_labelled_images
from cnnvis.from_config import images_from_config, model_from_config
from cnnvis.invariance import (KINDS, NAMES, change_ratio, claims, invariance_curves, linearity, probability_drop,
                               relative_distance, relative_probability_drop, transform, unrelated_ratio)
from cnnvis.models import CNN, build_model, resolve_layers
from cnnvis.plotting.invariance import invariance_figure


MODEL_KINDS = [CNN]  # the networks it runs (cnnvis.config.check_model_kind)


@dataclass
class Config(ExperimentConfig):
    # the paper's five: lawn mower, Shih-Tzu, African crocodile, African grey, entertainment center
    classes: list[int] = field(default_factory=lambda: [621, 155, 49, 87, 548])
    early: str | None = None  # None: the model's ZFNet layer 1 (its first conv)
    late: str | None = None  # None: the model's ZFNet layer 7 (fc7, or the pooled vector the classifier reads)
    translations: list[float] = field(default_factory=lambda: [float(v) for v in range(-60, 61, 10)])  # px
    scales: list[float] = field(default_factory=lambda: [round(1 + 0.1 * k, 1) for k in range(9)])  # 1 .. 1.8
    rotations: list[float] = field(default_factory=lambda: [float(v) for v in range(0, 361, 15)])  # degrees
    # the claims: a seeded sample of the dataset on coarser grids (each keeps the identity and the smallest step)
    sample_images: int = 100
    sample_translations: list[float] = field(default_factory=lambda: [-60.0, -40.0, -20.0, -10.0, 0.0, 10.0, 20.0,
                                                                      40.0, 60.0])
    sample_scales: list[float] = field(default_factory=lambda: [1.0, 1.1, 1.2, 1.4, 1.6, 1.8])
    sample_rotations: list[float] = field(default_factory=lambda: [0.0, 15.0, 45.0, 90.0, 135.0, 180.0, 225.0,
                                                                   270.0, 315.0])
    # the rotation exception: the paper's entertainment center, then round objects that look alike at any angle
    # (balls, caps, a manhole cover, a wheel, fruit and food seen from above, flowers, an urchin, a web)
    symmetric_classes: list[int] = field(default_factory=lambda: [
        548, 430, 522, 574, 722, 805, 852, 890, 455, 622, 640, 479, 950, 931, 963, 985, 328, 815])
    much_less: float = 0.5  # "much less": the late layer's relative change at most this share of the early one's
    linear_r: float = 0.8  # "quasi-linear": Pearson r of distance with |change| above this
    # "stable": over correctly classified images, p(true) loses less than this share of its identity value on
    # average over the sweep; "not invariant": more
    stable_drop: float = 0.2
    control_images: int = 20  # the random-weights control's images: the first of the sample (and of the symmetric)


def main(cfg, out, record):
    images = images_from_config(cfg, record)  # data first: a missing dataset fails before anything is written
    model = model_from_config(cfg, record)
    e, size = cfg.experiment, cfg.model.input_size
    e.early, e.late = (resolve_layers(model, e[key], key, f"experiment.{key}") for key in ("early", "late"))
    fill = images.mean_color()
    layers = [e.early, e.late]
    idx = pick_labelled_images(images.labels, e.classes)
    x, labels = images.tensors(idx, size), images.labels[idx]
    names = [images.classes[y] for y in labels]
    sweeps = {"translate_y": e.translations, "scale": e.scales, "rotate": e.rotations}
    if cfg.smoke:
        sweeps = {k: v[:: max(1, len(v) // 3)] for k, v in sweeps.items()}
    curves = [invariance_curves(model, x, labels, kind, sweeps[kind], layers, fill) for kind in KINDS]
    shown_at = [c.amounts[-1] if c.kind != "rotate" else 45.0 for c in curves]  # 360 degrees would look unchanged
    strips = [transform(x, c.kind, a, fill) for c, a in zip(curves, shown_at)]
    out.figure(invariance_figure(curves, strips, shown_at, names, [f"{e.early} (early)", f"{e.late} (late)"],
                                 title=f"{cfg.model.name}: invariance of 5 {images.name} images"), "fig5_invariance")
    out.table(curves_table(curves, layers), "invariance_curves", title="Fig. 5 curves, averaged over the 5 images",
              notes=f"Relative distance = ||f(x) - f(T(x))|| / ||f(x)|| at each layer (the figure plots the raw "
                    f"Euclidean distance per image); uncovered pixels take the dataset's mean colour. Images: "
                    f"{', '.join(names)}. Command: `python run.py experiment=zfnet_invariance`.")

    sample = sample_labelled_images(images.labels, e.sample_images, cfg.seed)
    symmetric = [int(i) for i in np.flatnonzero(np.isin(images.labels, list(e.symmetric_classes)))]
    trained, per_image = sample_claims(model, images, sample, symmetric, e, layers, fill, size, cfg.seed)
    per_image.to_csv(out.path("per_image.csv"), index=False)
    torch.manual_seed(cfg.seed)  # the control's random initialization
    random_model = build_model(cfg.model.name, cfg.model.num_classes, pretrained=False, input_size=size).eval()
    control, control_per_image = sample_claims(random_model, images, sample[: e.control_images],
                                               symmetric[: e.control_images], e, layers, fill, size, cfg.seed)
    control_per_image.to_csv(out.path("control_per_image.csv"), index=False)
    symmetric_names = ", ".join(images.classes[c] for c in e.symmetric_classes if c < len(images.classes))
    out.claims(with_control(trained, control), "claims",
               title="Zeiler & Fergus Sec. 4.4 (Fig. 5) claims over a sample of images",
               notes=claims_notes(cfg, model, images.name, sample, symmetric, grids_of(e), symmetric_names))
    return {"images": len(idx), "sample_images": len(sample), "symmetric_images": len(symmetric),
            "control_images": len(sample[: e.control_images])}


def grids_of(e) -> dict:
    return {"translate_y": e.sample_translations, "scale": e.sample_scales, "rotate": e.sample_rotations}


def sample_claims(model, images, sample, symmetric, e, layers, fill, size, seed):
    """The Sec. 4.4 claims over ``sample`` (rotation's exception over ``symmetric``) and their per-image values."""
    xs, ys = images.tensors(sample, size), images.labels[sample]
    by = {kind: invariance_curves(model, xs, ys, kind, grid, layers, fill) for kind, grid in grids_of(e).items()}
    unrelated = unrelated_ratio(model, xs, e.early, e.late, seed)
    sym_curve = (invariance_curves(model, images.tensors(symmetric, size), images.labels[symmetric], "rotate",
                                   e.sample_rotations, layers, fill) if symmetric else None)
    per_image = pd.DataFrame({"image": [images.paths[i].rsplit("/", 1)[-1] for i in sample],
                              "label": [images.classes[y] for y in ys], "correct": by["rotate"].correct.numpy(),
                              "unrelated_late_over_early": unrelated.numpy()})
    for kind, c in by.items():
        per_image[f"{kind}_late_over_early"] = change_ratio(c, e.early, e.late).numpy()
        per_image[f"{kind}_late_r"] = linearity(c, e.late).numpy()
        per_image[f"{kind}_early_r"] = linearity(c, e.early).numpy()
        per_image[f"{kind}_p_true_drop"] = probability_drop(c).numpy()
        per_image[f"{kind}_p_true_relative_drop"] = relative_probability_drop(c).numpy()
    return claims(by, unrelated, sym_curve, e.early, e.late, e.much_less, e.linear_r, e.stable_drop), per_image


def curves_table(curves, layers) -> pd.DataFrame:
    rows = []
    for c in curves:
        for a, amount in enumerate(c.amounts):
            row = {"transformation": c.kind, "amount": amount}
            for layer in layers:
                row[f"{layer}_relative_distance"] = float(relative_distance(c, layer)[:, a].mean())
            row["p_true_mean"] = float(c.probability[:, a].mean())
            rows.append(row)
    return pd.DataFrame(rows)


def claims_notes(cfg, model, dataset, sample, symmetric, grids, symmetric_names) -> str:
    e = cfg.experiment
    return (f"{cfg.model.name} ({model.weights_source}) replaces ZFNet; `{e.early}` stands for layer 1, `{e.late}` "
            f"for layer 7. {len(sample)} images sampled from {dataset} (seed {cfg.seed}); sweeps: "
            + "; ".join(f"{NAMES[k]} {', '.join(f'{a:g}' for a in g)}" for k, g in grids.items()) +
            ". Intervals: 95 % bootstrap over images. Relative distance = ||f(x) - f(T(x))|| / ||f(x)||; r leaves out "
            "the identity point (0 by construction). Output stability: the relative drop of p(true) = (p at the "
            "identity - its mean over the sweep's other amounts) / p at the identity, over the images whose top "
            "class at the identity is their label (the others have no confidence to keep; each row says how many "
            f"it excluded); stable below {e.stable_drop:g}, not invariant above it. Rotation's exception: every "
            f"loaded image of the rotationally symmetric classes ({len(symmetric)} images of {symmetric_names}; the "
            "paper names one example, the entertainment center, we add round objects that look alike at any angle), "
            "rotated over the same sweep. Random-weights control: the same measurements on the same architecture "
            f"randomly initialised (torch seed {cfg.seed}), on the first {len(sample[: e.control_images])} sampled "
            f"images and the first {len(symmetric[: e.control_images])} symmetric ones (about a fifth more forward "
            "passes than the trained network's part). Per-image values: per_image.csv, control_per_image.csv. "
            "Old rules (before issue 23): a claim read 'yes'/'not reproduced'; output stability was the absolute "
            "drop of p(true) over every sampled image, stable below 0.1 (p(true) near 1/1000 on a random network "
            "made it pass); the rotation exception used the entertainment center only and read 'not comparable' "
            "with fewer than 2 images.")
