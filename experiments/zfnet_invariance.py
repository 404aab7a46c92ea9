"""Zeiler & Fergus 2014 Fig. 5: feature invariance to vertical translation, scale and rotation at an early and a
late layer, and the classifier's probability of the true label.

The figure shows the paper's 5 images; the claims are decided over a seeded sample of ``sample_images`` images
of the dataset, per image, with 95 % intervals over images (cnnvis.stats).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from cnnvis.claims import NOT_COMPARABLE, Claim, claims_frame, decide
from cnnvis.config import ExperimentConfig
from cnnvis.examples import pick_labelled_images, sample_labelled_images
from cnnvis.from_config import images_from_config, model_from_config
from cnnvis.invariance import (KINDS, change_ratio, invariance_curves, linearity, output_not_invariant, output_stable,
                               probability_drop, quasi_linear, relative_distance, smallest_steps, top_changes_less,
                               transform, unrelated_ratio)
from cnnvis.models import CNN, resolve_layers
from cnnvis.plotting.invariance import invariance_figure
from cnnvis.stats import bootstrap_mean

PAPER = "Zeiler & Fergus 2014"
NAMES = {"translate_y": "vertical translation", "scale": "scaling", "rotate": "rotation"}


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
    symmetric_classes: list[int] = field(default_factory=lambda: [548])  # the paper's rotation exception
    much_less: float = 0.5  # "much less": the late layer's relative change at most this share of the early one's
    linear_r: float = 0.8  # "quasi-linear": Pearson r of distance with |change| above this
    stable_drop: float = 0.1  # "stable": p(true) falls by less than this over the sweep; "not invariant": more


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
    xs, ys = images.tensors(sample, size), images.labels[sample]
    grids = {"translate_y": e.sample_translations, "scale": e.sample_scales, "rotate": e.sample_rotations}
    by = {kind: invariance_curves(model, xs, ys, kind, grids[kind], layers, fill) for kind in KINDS}
    unrelated = unrelated_ratio(model, xs, e.early, e.late, cfg.seed)
    symmetric = [int(i) for i in np.flatnonzero(np.isin(images.labels, list(e.symmetric_classes)))]
    sym_curve = (invariance_curves(model, images.tensors(symmetric, size), images.labels[symmetric], "rotate",
                                   e.sample_rotations, layers, fill) if symmetric else None)
    per_image = pd.DataFrame({"image": [images.paths[i].rsplit("/", 1)[-1] for i in sample],
                              "label": [images.classes[y] for y in ys],
                              "unrelated_late_over_early": unrelated.numpy()})
    for kind, c in by.items():
        per_image[f"{kind}_late_over_early"] = change_ratio(c, e.early, e.late).numpy()
        per_image[f"{kind}_late_r"] = linearity(c, e.late).numpy()
        per_image[f"{kind}_early_r"] = linearity(c, e.early).numpy()
        per_image[f"{kind}_p_true_drop"] = probability_drop(c).numpy()
    per_image.to_csv(out.path("per_image.csv"), index=False)
    symmetric_names = ", ".join(images.classes[c] for c in e.symmetric_classes if c < len(images.classes))
    out.table(claims_table(by, unrelated, sym_curve, e, symmetric_names), "claims",
              title="Zeiler & Fergus Sec. 4.4 (Fig. 5) claims over a sample of images",
              notes=f"{cfg.model.name} ({model.weights_source}) replaces ZFNet; `{e.early}` stands for layer 1, "
                    f"`{e.late}` for layer 7. {len(sample)} images sampled from {images.name} (seed {cfg.seed}); sweeps: "
                    + "; ".join(f"{NAMES[k]} {', '.join(f'{a:g}' for a in g)}" for k, g in grids.items()) +
                    ". Intervals: 95 % bootstrap over images. Relative distance = ||f(x) - f(T(x))|| / ||f(x)||; "
                    "r leaves out the identity point (0 by construction); the p(true) drop is p at the identity "
                    "minus its mean over the sweep's other amounts. Per-image values: per_image.csv.")
    return {"images": len(idx), "sample_images": len(sample)}


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


def claims_table(by: dict, unrelated: torch.Tensor, sym_curve, e, symmetric_names: str) -> pd.DataFrame:
    """Each Sec. 4.4 claim decided by its rule over the sample's images (``by``: kind -> InvarianceCurves)."""
    rows = []
    base = bootstrap_mean(unrelated)
    for kind, c in by.items():
        est, vs_unrelated, holds = top_changes_less(c, e.early, e.late, unrelated, e.much_less)
        steps = " and ".join(f"{c.amounts[a]:g}" for a in smallest_steps(c))
        rows.append(Claim(
            PAPER, "Sec. 4.4, Fig. 5 (a2-c2 vs a3-c3)",
            f"A small {NAMES[kind]} changes layer-1 features dramatically but the top feature layer much less",
            "qualitative", f"late / early relative change at {steps}: {est.format()}; minus the baseline: "
                           f"{vs_unrelated.format()}", est.n, f"two different images' ratio: {base.format()}",
            f"yes when the 95 % interval of the mean per-image ratio lies below {e.much_less:g} and that of its paired "
            "difference to the two-different-images ratio below 0", decide(holds)))
    for kind in ("translate_y", "scale"):
        est, vs_early, holds = quasi_linear(by[kind], e.late, e.early, e.linear_r)
        early = bootstrap_mean(linearity(by[kind], e.early))
        rows.append(Claim(
            PAPER, "Sec. 4.4, Fig. 5 (a3, b3)", f"At the top layer the change is quasi-linear in {NAMES[kind]}",
            "qualitative", f"Pearson r of the late-layer distance with |change|: {est.format()}; minus the early "
                           f"layer's: {vs_early.format()}", est.n,
            f"the early layer's r: {early.format()}",
            f"yes when the 95 % interval of the mean per-image r (identity point left out) lies above {e.linear_r:g} "
            "and that of its paired difference to the early layer's r above 0", decide(holds)))
    rot, rot_holds = output_not_invariant(by["rotate"], e.stable_drop)
    for kind in ("translate_y", "scale"):
        est, holds = output_stable(by[kind], e.stable_drop)
        rows.append(Claim(
            PAPER, "Sec. 4.4, Fig. 5 (a4, b4)", f"The output is stable to {NAMES[kind]}", "qualitative",
            f"drop of p(true) over the sweep: {est.format()}", est.n, f"rotation's drop: {rot.format()}",
            f"yes when the 95 % interval of the mean per-image drop lies below {e.stable_drop:g}", decide(holds)))
    trans, _ = output_stable(by["translate_y"], e.stable_drop)
    rows.append(Claim(
        PAPER, "Sec. 4.4, Fig. 5 (c4)", "The output is not invariant to rotation", "qualitative",
        f"drop of p(true) over the whole rotation sweep: {rot.format()}", rot.n,
        f"vertical translation's drop: {trans.format()}",
        f"yes when the 95 % interval of the mean per-image drop lies above {e.stable_drop:g}", decide(rot_holds)))
    rule = (f"yes when the 95 % interval of the mean drop over the images of {symmetric_names or 'the symmetric classes'}"
            f" lies below {e.stable_drop:g}; fewer than 2 such images: not comparable")
    if sym_curve is None:
        ours, n, verdict = "no image of these classes among the loaded images", 0, NOT_COMPARABLE
    else:
        est, holds = output_stable(sym_curve, e.stable_drop)
        ours, n = f"drop of p(true) over the whole rotation sweep: {est.format()}", est.n
        verdict = NOT_COMPARABLE if est.n < 2 else decide(holds)
    rows.append(Claim(PAPER, "Sec. 4.4, Fig. 5 (c4)",
                      f"...except for rotationally symmetric objects ({symmetric_names or 'none given'})",
                      "qualitative (1 image)", ours, n, f"all sampled images: {rot.format()}", rule, verdict))
    return claims_frame(rows)
