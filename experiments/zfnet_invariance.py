"""Zeiler & Fergus 2014 Fig. 5: feature invariance of 5 images to vertical translation, scale and rotation,
at an early and a late layer, and the classifier's probability of the true label."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from cnnvis.config import ExperimentConfig
from cnnvis.invariance import KINDS, invariance_curves, transform
from cnnvis.models import resolve_layers
from cnnvis.plotting.invariance import invariance_figure
from cnnvis.runner import images_from_config, model_from_config


@dataclass
class Config(ExperimentConfig):
    # the paper's five: lawn mower, Shih-Tzu, African crocodile, African grey, entertainment center
    classes: list[int] = field(default_factory=lambda: [621, 155, 49, 87, 548])
    early: str | None = None  # None: the model's ZFNet layer 1 (its first conv)
    late: str | None = None  # None: the model's ZFNet layer 7 (fc7, or the pooled vector the classifier reads)
    translations: list[float] = field(default_factory=lambda: [float(v) for v in range(-60, 61, 10)])  # px
    scales: list[float] = field(default_factory=lambda: [round(1 + 0.1 * k, 1) for k in range(9)])  # 1 .. 1.8
    rotations: list[float] = field(default_factory=lambda: [float(v) for v in range(0, 361, 15)])  # degrees


def pick_images(images, classes, n=5) -> list[int]:
    """The first image of each wanted class, topped up with the first other labelled images."""
    picks = [int(np.flatnonzero(images.labels == c)[0]) for c in classes if (images.labels == c).any()]
    rest = [int(i) for i in np.flatnonzero(images.labels >= 0) if i not in picks]
    return (picks + rest)[:n]


def main(cfg, out):
    images = images_from_config(cfg)  # data first: a missing dataset fails before anything is written
    model = model_from_config(cfg)
    e, size = cfg.experiment, cfg.model.input_size
    e.early, e.late = (resolve_layers(model, e[key], key, f"experiment.{key}") for key in ("early", "late"))
    idx = pick_images(images, e.classes)
    x, labels = images.tensors(idx, size), images.labels[idx]
    names = [images.classes[y] for y in labels]
    fill = images.mean_color()
    sweeps = {"translate_y": e.translations, "scale": e.scales, "rotate": e.rotations}
    if cfg.smoke:
        sweeps = {k: v[:: max(1, len(v) // 3)] for k, v in sweeps.items()}
    curves = [invariance_curves(model, x, labels, kind, sweeps[kind], [e.early, e.late], fill) for kind in KINDS]
    shown_at = [c.amounts[-1] if c.kind != "rotate" else 45.0 for c in curves]  # 360 degrees would look unchanged
    strips = [transform(x, c.kind, a, fill) for c, a in zip(curves, shown_at)]
    out.figure(invariance_figure(curves, strips, shown_at, names, [f"{e.early} (early)", f"{e.late} (late)"],
                                 title=f"{cfg.model.name}: invariance of 5 {images.name} images"), "fig5_invariance")

    rows = []
    for c in curves:
        for a, amount in enumerate(c.amounts):
            row = {"transformation": c.kind, "amount": amount}
            for layer in (e.early, e.late):
                rel = c.distances[layer][:, a] / c.reference_norm[layer]
                row[f"{layer}_relative_distance"] = float(rel.mean())
            row["p_true_mean"] = float(c.probability[:, a].mean())
            rows.append(row)
    table = pd.DataFrame(rows)
    out.table(table, "invariance_curves", title="Fig. 5 curves, averaged over the 5 images",
              notes=f"Relative distance = ||f(x) - f(T(x))|| / ||f(x)|| at each layer (the figure plots the raw Euclidean "
                    f"distance per image); uncovered pixels take the dataset's mean colour. Images: {', '.join(names)}. "
                    f"Command: `python run.py experiment=zfnet_invariance`.")
    claims = claims_table(curves, e, names)
    out.table(claims, "claims", title="Zeiler & Fergus Sec. 4.4 (Fig. 5) claims vs what we observe",
              notes=f"{cfg.model.name} ({model.weights_source}) replaces ZFNet; `{e.early}` stands for layer 1, "
                    f"`{e.late}` for layer 7.")
    return {"images": len(idx)}


def _at(curve, amount):
    return curve.amounts.index(min(curve.amounts, key=lambda a: abs(a - amount)))


def claims_table(curves, e, names) -> pd.DataFrame:
    by = {c.kind: c for c in curves}
    rel = lambda c, layer, a: float((c.distances[layer][:, _at(c, a)] / c.reference_norm[layer]).mean())
    small = {"translate_y": 10, "scale": 1.1, "rotate": 15}
    first = "; ".join(f"{k} {a:g}: {rel(by[k], e.early, a):.2f} vs {rel(by[k], e.late, a):.2f}" for k, a in small.items()
                      if k in by)
    early_bigger = all(rel(by[k], e.early, a) > rel(by[k], e.late, a) for k, a in small.items() if k in by)
    lin = []
    for k, shift in (("translate_y", 0.0), ("scale", 1.0)):
        c = by[k]
        d = c.distances[e.late].mean(0).numpy()
        lin.append(f"{k}: r = {np.corrcoef(np.abs(np.asarray(c.amounts) - shift), d)[0, 1]:.2f}")
    stable = {k: (float(by[k].probability[:, 0].mean()), float(by[k].probability[:, -1].mean()), by[k].amounts[-1])
              for k in ("translate_y", "scale")}
    rot = by["rotate"]
    p90 = rot.probability[:, _at(rot, 90)]
    p180 = rot.probability[:, _at(rot, 180)]
    ec = [i for i, n in enumerate(names) if n == "entertainment center"]
    r_values = [float(v.split("= ")[1]) for v in lin]
    drops = {k: p0 - p1 for k, (p0, p1, _) in stable.items()}
    p0 = rot.probability[:, 0]
    rot_text = (f"mean p(true) at 0/90/180 deg: {float(p0.mean()):.2f} / {float(p90.mean()):.2f} / {float(p180.mean()):.2f}")
    rot_ok = float(p90.mean()) < 0.7 * float(p0.mean())
    if ec:
        e_ = ec[0]
        rot_text += (f"; entertainment center: {float(p0[e_]):.2f} / {float(p90[e_]):.2f} / {float(p180[e_]):.2f}")
        rot_ok = rot_ok and min(float(p90[e_]), float(p180[e_])) > 0.7 * float(p0[e_])
    rows = [
        ("Small transformations change layer-1 features dramatically but the top feature layer much less",
         f"relative distance early vs late: {first}", "yes" if early_bigger else "no"),
        ("At the top layer the change is quasi-linear in translation and scale",
         "correlation of the late-layer distance with |change|: " + ", ".join(lin),
         "yes" if min(r_values) > 0.8 else "partly (r <= 0.8)"),
        ("The output is stable to translation and scaling",
         "; ".join(f"{k}: mean p(true) {p0_:.2f} -> {p1:.2f} at {a:g}" for k, (p0_, p1, a) in stable.items()),
         "yes (mean drop < 0.1)" if max(drops.values()) < 0.1 else "no (mean drop >= 0.1)"),
        ("The output is not invariant to rotation, except for rotationally symmetric objects (entertainment center)",
         rot_text, "yes" if rot_ok else "partly"),
    ]
    return pd.DataFrame(rows, columns=["paper's claim", "ours", "agrees"])
