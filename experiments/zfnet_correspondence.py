"""Zeiler & Fergus 2014 Table 1 (Sec. 4.3, correspondence analysis): mask the same part (right eye, left eye,
nose) in frontal dog images (the paper: 5; ours: the config's) and measure how consistently the features change across the images.

For image i and layer l, eps_i = x_i - x~_i (features of the original minus the masked image). The score is
Delta_l = mean over the ordered pairs i != j of H(sign(eps_i), sign(eps_j)) / d, the Hamming distance
between the sign vectors divided by their length d: the share of features whose change differs in sign.
The paper writes the sum over pairs but its values (~0.07) are per-feature rates, so we normalize both ways.
Lower = the part is represented more consistently. Random regions (the same random box in all images, a new
one for each of ``repeats`` draws, averaged) are the baseline. Delta is the mean of per-image scores (image i's
mean rate against every other image), so intervals and the part-vs-random verdict are over images.
An exploratory second table, added after the paper's measure said no, takes each pair's rate over the features the
mask changed in either image only (features no mask touches agree trivially); it decides nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import pandas as pd
import torch

from cnnvis.claims import Claim, claims_frame, decide
from cnnvis.config import ExperimentConfig
from cnnvis.correspondence import PARTS, location_scores, parts_beat_random
from cnnvis.data import decode_to_cache, index_dataset
from cnnvis.from_config import model_from_config
from cnnvis.models import CNN, IMAGENET_MEAN, resolve_layers
from cnnvis.plotting.correspondence import parts_figure
from cnnvis.stats import bootstrap_mean

# Table 1 of the paper, layer 5 (ZFNet's last conv layer), mean over their repeats
PAPER_LAYER5 = {"right_eye": 0.067, "left_eye": 0.069, "nose": 0.079, "random": 0.107}


MODEL_KINDS = [CNN]  # the networks it runs (cnnvis.config.check_model_kind)


@dataclass
class Config(ExperimentConfig):
    # frontal dogs of imagenet-val-1300; boxes (x0, y0, x1, y1) in 224-px coordinates of the stretched image.
    # right/left = the dog's own (its right eye is on the image's left).
    images: list[str] = field(default_factory=list)
    right_eye: list[list[int]] = field(default_factory=list)
    left_eye: list[list[int]] = field(default_factory=list)
    nose: list[list[int]] = field(default_factory=list)
    layers: Optional[list[str]] = None  # None: the model's middle conv, last conv (layer 5), classifier input (layer 7)
    repeats: int = 20  # random boxes the baseline averages over


def main(cfg, out, record):
    e, size = cfg.experiment, cfg.model.input_size
    index = index_dataset(cfg.dataset)  # data first: a missing dataset fails before anything is written
    names = [p.rsplit("/", 1)[-1] for p in index.paths]
    missing = [f for f in e.images if f not in names]
    if missing or not e.images:
        raise ValueError(f"experiment.images must name files of {index.name}; not found: {missing or '(none given)'}")
    if not all(len(getattr(e, p)) == len(e.images) for p in PARTS):
        raise ValueError(f"give one box per image for each of {', '.join(PARTS)} ({len(e.images)} images)")
    images = decode_to_cache(index.select([names.index(f) for f in e.images]), cfg.dataset.resize or size,
                             getattr(cfg.dataset.resize_mode, "value", cfg.dataset.resize_mode), cfg.cache_dir,
                             cfg.dataset.num_workers, record)  # only the config's dogs, in its order
    model = model_from_config(cfg, record)
    e.layers = resolve_layers(model, e.layers, "correspondence", "experiment.layers")
    idx = list(range(len(images)))
    x = images.tensors(idx, size)
    fill = torch.tensor(IMAGENET_MEAN)  # the grey of the data the model was trained on
    rng = np.random.default_rng(cfg.seed)
    repeats = 2 if cfg.smoke else e.repeats
    boxes = {p: np.asarray(getattr(e, p)) for p in PARTS}
    w = int(np.mean([b[:, 2] - b[:, 0] for b in boxes.values()]))
    h = int(np.mean([b[:, 3] - b[:, 1] for b in boxes.values()]))
    random_boxes = []
    for _ in range(repeats):
        x0, y0 = rng.integers(0, size - w + 1), rng.integers(0, size - h + 1)
        random_boxes.append([int(x0), int(y0), int(x0 + w), int(y0 + h)])
    out.figure(parts_figure(x, {**boxes, "random": [random_boxes[0]] * len(idx)},
                            [images.classes[images.labels[i]] for i in idx]), "masked_parts")
    scores = location_scores(model, x, boxes, random_boxes, e.layers, fill)
    scores.to_csv(out.path("deltas_per_image.csv"), index=False)
    pairs = len(idx) * (len(idx) - 1)
    method = (f"Δ_l = (1/{pairs}) Σ_(i≠j) H(sign(ε_i^l), sign(ε_j^l)) / d: the mean over the ordered pairs of the "
              f"{len(idx)} images of the share of the d features of layer l whose change ε = x − x̃ differs in sign "
              f"(sign 0 counts as its own value); the paper prints the sum over pairs but values only a per-feature "
              f"rate can have. Each cell: the mean of the per-image scores (image i against every other image) with "
              f"a 95 % bootstrap interval over the {len(idx)} images (few, and each score shares images with the "
              f"others: the interval is rough). Parts: the boxes of the config; random: the same random {w}x{h} box in "
              f"all images, averaged over {repeats} boxes. Masks are ImageNet's mean colour. {cfg.model.name} "
              f"({model.weights_source}) replaces ZFNet: `{e.layers[1]}` (last conv) stands for layer 5, `{e.layers[2]}` "
              f"(the vector the classifier reads) for layer 7, `{e.layers[0]}` is a middle layer.")
    out.table(summary_table(scores, e.layers, "delta", paper=True), "table1_correspondence",
              title="Table 1: correspondence of dog parts (Δ, lower = more consistent)",
              notes=method + " Command: `python run.py experiment=zfnet_correspondence`.")
    out.table(claims_table(scores, e.layers, len(idx)), "claims", title="Table 1: the paper's claim beside ours",
              notes=method)
    shares = "; ".join(f"{layer}: " + ", ".join(
        f"{loc.replace('_', ' ')} {scores[(scores.location == loc) & (scores.layer == layer)].changed_share.mean():.3f}"
        for loc in (*PARTS, "random")) for layer in e.layers)
    changed_verdicts = ", ".join(f"{layer}: {'yes' if parts_beat_random(scores, layer, 'delta_changed')[1] else 'no'}"
                                 for layer in e.layers)
    out.table(summary_table(scores, e.layers, "delta_changed"), "table1_changed_features",
              title="Exploratory, added after the paper's measure said no: Δ over the features the mask changed",
              notes="Not the paper's measure and decides no claim: the same masks and pairs as table1_correspondence, "
                    "with each pair's Hamming rate taken over the features changed in image i or j (sign ≠ 0 in "
                    "either), so features no mask touches do not count as agreeing. Share of features changed by the "
                    f"mask, mean over images: {shares}. Every part's paired difference to random below 0 (95 % "
                    f"bootstrap over images): {changed_verdicts}.")
    means = scores.groupby(["location", "layer"])[["delta", "delta_changed"]].mean()
    return {f"{col}_{loc}_{layer}": float(means.loc[(loc, layer), col]) for col in ("delta", "delta_changed")
            for loc in (*PARTS, "random") for layer in e.layers}


def summary_table(scores: pd.DataFrame, layers, column: str, paper: bool = False) -> pd.DataFrame:
    rows = []
    for location in (*PARTS, "random"):
        row = {"occluded": location.replace("_", " ")}
        for layer in layers:
            at = scores[(scores.location == location) & (scores.layer == layer)]
            row[layer] = bootstrap_mean(at[column].to_numpy()).format()
        if paper:
            row["paper layer 5"] = f"{PAPER_LAYER5[location]:.3f}"
        rows.append(row)
    return pd.DataFrame(rows)


def claims_table(scores: pd.DataFrame, layers, n_images: int) -> pd.DataFrame:
    """One row per layer (``layers``: middle, layer-5 and layer-7 stand-ins): every part's per-image Δ against random
    boxes', paired over images."""
    paper = ", ".join(f"{p.replace('_', ' ')} {PAPER_LAYER5[p]:.3f}" for p in PARTS)
    rows = []
    for layer in layers:
        diffs, holds = parts_beat_random(scores, layer)
        random = bootstrap_mean(scores[(scores.location == "random") & (scores.layer == layer)].delta.to_numpy())
        rows.append(Claim(
            "Zeiler & Fergus 2014", "Table 1, Sec. 4.3",
            f"Masking the same part in different images changes `{layer}` features more consistently than masking "
            "random regions", f"layer 5: {paper} vs random {PAPER_LAYER5['random']:.3f}" if layer == layers[1] else
            "layer 7: parts and random close (values not transcribed)" if layer == layers[2] else
            "not in the paper (a middle layer)",
            "Δ(part) − Δ(random): " + "; ".join(f"{p.replace('_', ' ')} {d.format()}" for p, d in diffs.items()),
            n_images, f"random regions: Δ = {random.format()}",
            "yes when, for every part, the 95 % bootstrap interval over images of the paired difference lies below 0",
            decide(holds)))
    return claims_frame(rows)
