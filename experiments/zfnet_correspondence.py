"""Zeiler & Fergus 2014 Table 1 (Sec. 4.3, correspondence analysis): mask the same part (right eye, left eye,
nose) in 5 frontal dog images and measure how consistently the features change across the images.

For image i and layer l, eps_i = x_i - x~_i (features of the original minus the masked image). The score is
Delta_l = mean over the 20 ordered pairs i != j of H(sign(eps_i), sign(eps_j)) / d, the Hamming distance
between the sign vectors divided by their length d: the share of features whose change differs in sign.
The paper writes the sum over pairs, but its values (~0.07) are per-feature rates, so we normalize both ways.
Lower = the part is represented more consistently. Random regions (the same random box in all 5 images)
are the baseline. Repeats: parts shifted by up to ``jitter`` px, a new random box each time. A second table takes
each pair's rate over the features the mask changed in either image only (features no mask touches agree trivially).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import permutations
from typing import Optional

import numpy as np
import pandas as pd
import torch

from cnnvis.config import ExperimentConfig
from cnnvis.hooks import activations
from cnnvis.models import IMAGENET_MEAN, layer_role, resolve_layers
from cnnvis.plotting import to_image
from cnnvis.data import decode_to_cache, index_dataset
from cnnvis.runner import model_from_config

PARTS = ("right_eye", "left_eye", "nose")
# Table 1 of the paper, layer 5 (ZFNet's last conv layer), mean over their repeats
PAPER_LAYER5 = {"right_eye": 0.067, "left_eye": 0.069, "nose": 0.079, "random": 0.107}


@dataclass
class Config(ExperimentConfig):
    # five frontal dogs of imagenet-val-1300; boxes (x0, y0, x1, y1) in 224-px coordinates of the stretched image.
    # right/left = the dog's own (its right eye is on the image's left).
    images: list[str] = field(default_factory=list)
    right_eye: list[list[int]] = field(default_factory=list)
    left_eye: list[list[int]] = field(default_factory=list)
    nose: list[list[int]] = field(default_factory=list)
    layers: Optional[list[str]] = None  # None: the model's middle conv, last conv (layer 5), classifier input (layer 7)
    repeats: int = 10
    jitter: int = 3  # px: parts move by up to this much between repeats


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


def delta(signs: torch.Tensor, changed_only: bool = False) -> float:
    """Mean over ordered pairs i != j of the normalized Hamming distance between rows of ``signs``.
    ``changed_only``: over the features the mask changed in image i or j only, so that the many features no mask
    touches (sign 0 in both: counted as agreeing) do not dilute the score."""
    rates = []
    for i, j in permutations(range(len(signs)), 2):
        differ = signs[i] != signs[j]
        if changed_only:
            differ = differ[(signs[i] != 0) | (signs[j] != 0)]
        if differ.numel():
            rates.append(differ.float().mean())
    return float(np.mean(rates)) if rates else 0.0


def shifted(boxes, offsets, side):
    """Boxes moved by per-image (dx, dy) offsets, kept inside the image."""
    out = []
    for (x0, y0, x1, y1), (dx, dy) in zip(np.asarray(boxes, dtype=int), offsets):
        dx, dy = int(np.clip(dx, -x0, side - x1)), int(np.clip(dy, -y0, side - y1))
        out.append([x0 + dx, y0 + dy, x1 + dx, y1 + dy])
    return out


def main(cfg, out):
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
                             cfg.dataset.num_workers)  # only the five dogs, in the config's order
    model = model_from_config(cfg)
    e.layers = resolve_layers(model, e.layers, "correspondence", "experiment.layers")
    idx = list(range(len(images)))
    x = images.tensors(idx, size)
    fill = torch.tensor(IMAGENET_MEAN)  # the grey of the data the model was trained on
    rng = np.random.default_rng(cfg.seed)
    repeats = 2 if cfg.smoke else e.repeats
    boxes = {p: np.asarray(getattr(e, p)) for p in PARTS}
    w = int(np.mean([b[:, 2] - b[:, 0] for b in boxes.values()]))
    h = int(np.mean([b[:, 3] - b[:, 1] for b in boxes.values()]))

    scores = []  # (location, repeat, layer, delta, delta over changed features, share of features changed)
    for r in range(repeats):
        trial = {p: shifted(b, rng.integers(-e.jitter, e.jitter + 1, (len(idx), 2)) if r else np.zeros((len(idx), 2)),
                            size) for p, b in boxes.items()}
        x0, y0 = rng.integers(0, size - w + 1), rng.integers(0, size - h + 1)
        trial["random"] = [[x0, y0, x0 + w, y0 + h]] * len(idx)
        for location, b in trial.items():
            for layer, signs in sign_changes(model, x, mask(x, b, fill), list(e.layers)).items():
                scores.append((location, r, layer, delta(signs), delta(signs, changed_only=True),
                               float((signs != 0).float().mean())))
        if r == 0:
            out.figure(parts_figure(x, trial, [images.classes[images.labels[i]] for i in idx]), "masked_parts")
    df = pd.DataFrame(scores, columns=["location", "repeat", "layer", "delta", "delta_changed", "changed_share"])
    means = df.groupby(["location", "layer"])[["delta", "delta_changed", "changed_share"]].mean()
    verdict, verdict_changed = (parts_beat_random(means, e.layers, col) for col in ("delta", "delta_changed"))
    out.table(summary_table(df, e.layers, "delta", paper=True), "table1_correspondence",
              title="Table 1: correspondence of dog parts (Δ, lower = more consistent)",
              notes=f"Δ_l = (1/20) Σ_(i≠j) H(sign(ε_i^l), sign(ε_j^l)) / d: the mean over the 20 ordered pairs of the 5 "
                    f"images of the share of the d features of layer l whose change ε = x − x̃ differs in sign (sign 0 "
                    f"counts as its own value). The paper prints the sum over pairs but values only a per-feature rate "
                    f"can have; multiply ours by 20 for the un-averaged sum. mean ± std over {repeats} repeats: repeat 0 "
                    f"uses the boxes of the config, later ones shift each part box by up to {e.jitter} px; the random "
                    f"baseline masks the same random {w}x{h} box in all 5 images, a new one each repeat. Masks are "
                    f"ImageNet's mean colour. {cfg.model.name} ({model.weights_source}) replaces ZFNet: "
                    f"`{layer_role(model, 'last_conv')}` (last conv) stands for layer 5, `{layer_role(model, 'late')}` "
                    f"(the vector the classifier reads) for layer 7, `{e.layers[0]}` is a middle layer. The paper's "
                    f"layer-7 values are not transcribed here.\n\nParts more consistent than random regions (every part "
                    f"below random): {yes_no(verdict)}. The paper: yes at layer 5, nearly equal at layer 7."
                    + ("" if all(verdict.values()) else why_not(means, e.layers, verdict_changed)) +
                    " Command: `python run.py experiment=zfnet_correspondence`.")
    out.table(summary_table(df, e.layers, "delta_changed"), "table1_changed_features",
              title="Table 1 over the changed features only (Δ among features the mask changed in either image)",
              notes="The same masks and pairs as table1_correspondence, with each pair's Hamming rate taken over the "
                    "features changed in image i or j (sign ≠ 0 in either), so features no mask touches do not count "
                    "as agreeing. Share of features changed by the mask, mean over images and repeats: " +
                    "; ".join(f"{layer}: " + ", ".join(f"{loc.replace('_', ' ')} "
                                                      f"{means.loc[(loc, layer), 'changed_share']:.3f}"
                                                      for loc in (*PARTS, "random")) for layer in e.layers) +
                    f".\n\nParts more consistent than random regions: {yes_no(verdict_changed)}.")
    df.to_csv(out.path("deltas_per_repeat.csv"), index=False)
    return {f"{col}_{loc}_{layer}": float(means.loc[(loc, layer), col]) for col in ("delta", "delta_changed")
            for loc in (*PARTS, "random") for layer in e.layers}


def summary_table(df: pd.DataFrame, layers, column: str, paper: bool = False) -> pd.DataFrame:
    rows = []
    for location in (*PARTS, "random"):
        row = {"occluded": location.replace("_", " ")}
        for layer in layers:
            d = df[(df.location == location) & (df.layer == layer)][column]
            row[layer] = f"{d.mean():.3f} ± {d.std():.3f}"
        if paper:
            row["paper layer 5"] = f"{PAPER_LAYER5[location]:.3f}"
        rows.append(row)
    return pd.DataFrame(rows)


def parts_beat_random(means: pd.DataFrame, layers, column: str) -> dict:
    """{layer: every part's mean ``column`` below the random regions'}."""
    return {layer: all(means.loc[(p, layer), column] < means.loc[("random", layer), column] for p in PARTS)
            for layer in layers}


def yes_no(verdict: dict) -> str:
    return ", ".join(f"{layer}: {'yes' if v else 'no'}" for layer, v in verdict.items())


def why_not(means: pd.DataFrame, layers, verdict_changed: dict) -> str:
    """Why parts may fail to beat random regions here, from the measured shares of changed features."""
    share = {layer: means.loc[(slice(None), layer), "changed_share"] for layer in layers}
    fewest = min(layers, key=lambda layer: share[layer].mean())
    return (f" Where ours says no: a mask changes only part of a layer's features (at {fewest} "
            f"{share[fewest].min():.0%}-{share[fewest].max():.0%}), and a feature unchanged in both images (sign 0) "
            "counts as agreeing, so Δ mostly measures how few features a mask touches; a random box, often on "
            "background, touches fewer. Over the changed features only (table1_changed_features) parts beat random "
            f"at: {', '.join(k for k, v in verdict_changed.items() if v) or 'no layer'}. Also: 5 images give few "
            "pairs, and EfficientNet-Lite0's residual, depthwise layers are not ZFNet's.")


def parts_figure(x, trial, classes):
    """Each dog with its part boxes and the random box of the first repeat (the paper's Fig. 8 left)."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    colors = {"right_eye": "red", "left_eye": "lime", "nose": "yellow", "random": "cyan"}
    fig, axes = plt.subplots(1, len(x), figsize=(3 * len(x), 3.4))
    for i, ax in enumerate(np.atleast_1d(axes)):
        ax.imshow(to_image(x[i]))
        for part, b in trial.items():
            x0, y0, x1, y1 = b[i]
            ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor=colors[part], lw=1.5))
        ax.set_title(classes[i][:24], fontsize=9)
        ax.axis("off")
    handles = [Rectangle((0, 0), 1, 1, fill=False, edgecolor=c, label=p.replace("_", " ")) for p, c in colors.items()]
    fig.legend(handles=handles, loc="lower center", ncol=4, fontsize=9, frameon=False)
    fig.suptitle("Masked regions (each is filled with the mean colour, one at a time)", fontsize=10)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    return fig
