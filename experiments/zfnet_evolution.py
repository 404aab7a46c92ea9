"""Zeiler & Fergus 2013 Fig. 4: the evolution of features through training.

For a few feature maps of each layer, the deconvnet projection of the map's strongest activation over the
held-out images, at every kept epoch of a training run (one column per epoch). The run is the `train`
experiment's: with the same model, data and recipe options it reuses that run's checkpoints (and trains,
or resumes, when they are missing). The paper's observation (lower layers converge within a few epochs, upper
layers after many) is decided on how far each layer's output still moves between an early kept epoch and the last
(``cnnvis.ablations.feature_change`` / ``evolution_claim``). Judged by the trained-enough gate (``cnnvis.run_gate``):
a run that failed it says so in the figure title, metrics and claim (and stays out of the gallery).
"""

import copy
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import pandas as pd
import torch

from cnnvis.config import ExperimentConfig
from cnnvis.from_config import train_val_sets, train_variant
from cnnvis.hooks import activations
from cnnvis.ablations import (build_model_at_width, early_epoch, evolution_claim, feature_change, first_conv,
                              remaining_share)
from cnnvis.claims import with_control
from cnnvis.gate import figure_note
from cnnvis.run_gate import initial_model, run_gate
from cnnvis.models import CNN
from cnnvis.plotting.training import evolution_grid
from cnnvis.training import TrainConfig, load_checkpoint, smoke_recipe


MODEL_KINDS = [CNN]  # the networks it runs (cnnvis.config.check_model_kind)
NO_CONTROL = ("not applicable: the claim is about training itself (a random initialization does not move); the "
              "trained-enough gate judges the run")


@dataclass
class Config(ExperimentConfig):
    train: TrainConfig = field(default_factory=TrainConfig)
    classes: Optional[int] = 10  # the N largest classes of the dataset (None: all)
    width: float = 1.0  # zfnet / alexnet from scratch: channel multiplier (the CPU preset: 0.25)
    checkpoint_root: str = "${oc.env:CNNVIS_CHECKPOINTS,data/checkpoints}"
    layers: list[str] = field(default_factory=lambda: ["conv1", "conv2", "conv3", "conv4", "conv5"])
    maps_per_layer: int = 4  # the maps with the strongest activations at the last epoch


def crop_to_support(proj: torch.Tensor, min_side: int = 9, rel: float = 0.02) -> torch.Tensor:
    """The square around the pixels the projection reaches (|value| above ``rel`` of its maximum)."""
    mag = proj.abs().sum(0)
    ys, xs = torch.nonzero(mag > rel * mag.max(), as_tuple=True)
    if len(ys) == 0:
        return proj
    side = max(int(ys.max() - ys.min()), int(xs.max() - xs.min()), min_side) + 1
    cy, cx = int(ys.min() + ys.max()) // 2, int(xs.min() + xs.max()) // 2
    h, w = mag.shape
    top = min(max(cy - side // 2, 0), max(h - side, 0))
    left = min(max(cx - side // 2, 0), max(w - side, 0))
    return proj[:, top:top + side, left:left + side]


def strongest_projections(model, x: torch.Tensor, picks: dict) -> dict:
    """{(layer, channel): projection of the channel's strongest activation over the images in ``x``}."""
    from cnnvis.deconvnet import deconv_project

    acts = [activations(model, chunk, list(picks)) for chunk in x.split(32)]
    out = {}
    for layer, channels in picks.items():
        peak = torch.cat([a[layer] for a in acts]).flatten(2).amax(2)  # (images, channels)
        for c in channels:
            image = int(peak[:, c].argmax())
            out[(layer, c)] = crop_to_support(deconv_project(model, x[image][None], layer, c)[0].detach())
    return out


def main(cfg, out, record):
    e = cfg.experiment
    images, train_set, val_set = train_val_sets(cfg, record, e.classes)  # data first
    recipe = smoke_recipe(e.train, cfg.smoke)
    m = cfg.model
    n_classes = len(images.classes)
    def build():
        return build_model_at_width(m.name, n_classes, m.input_size, e.width, m.pretrained, m.checkpoint)

    model, history, ckpt = train_variant(build, m.name, cfg, record, train_set, val_set, recipe, cfg.seed, e.classes)
    if m.checkpoint:
        record.add_checkpoint(m.checkpoint)  # the starting weights
    model.cpu().eval()
    start = initial_model(build, recipe, cfg.seed)
    gate, structure = run_gate(history, float(history.val_top1.iloc[-1]), len(val_set), n_classes,
                               first_conv(model).weight.detach(), first_conv(start).weight, f"{m.name} conv1")
    kept = sorted(ckpt.glob("epoch_*.pt"))
    epochs = [int(p.stem.split("_")[1]) for p in kept]
    x = images.tensors(val_set.idx, m.input_size)
    with torch.no_grad():
        final = activations(model, x[:64], list(e.layers))
    picks = {layer: final[layer].flatten(2).amax(2).mean(0).argsort(descending=True)[: e.maps_per_layer].tolist()
             for layer in e.layers}
    trained = copy.deepcopy(model)  # the last epoch's weights, which each kept epoch is compared with
    columns, change = [], {0: feature_change(start, trained, x, list(e.layers))}
    for epoch, path in zip(epochs, kept):
        model.load_state_dict(load_checkpoint(path)["model"])
        record.add_checkpoint(path)
        columns.append(strongest_projections(model, x, picks))
        change[epoch] = feature_change(model, trained, x, list(e.layers))
    early = early_epoch(epochs, len(history))
    claims = with_control([evolution_claim(change[early], change[0], list(e.layers), early, len(history), gate)], None,
                          NO_CONTROL)
    grid = {key: [col[key] for col in columns] for key in columns[0]}
    title = (f"Feature evolution (ZF Fig. 4): {m.name} on {n_classes} Caltech-101 classes, {m.input_size} px; "
             f"strongest activation over {len(x)} held-out images, projected by the deconvnet, at epochs {epochs} "
             f"of {recipe.epochs}{figure_note(gate)}")
    out.figure(evolution_grid(grid, epochs, title), "evolution", dpi=60)  # under 1 MB
    out.table(history, "metrics", title="The training run whose kept epochs are shown",
              notes=f"Checkpoints: `{ckpt}`. Maps per layer: the {e.maps_per_layer} with the largest mean peak "
                    f"activation at the last epoch (the paper shows a random subset). Trained-enough gate "
                    f"(cnnvis.gate; held-out: the validation images): {'passed' if gate.passed else 'FAILED'}: "
                    f"{gate.reason}.")
    out.table(pd.DataFrame([{"epoch": k, "layer": layer, "change_to_last": float(np.nanmean(v)),
                             "share_left": float(np.nanmean(remaining_share(per, change[0])[layer])),
                             "images": int(np.isfinite(v).sum())} for k, per in change.items() for layer, v in per.items()]),
              "feature_change", title="How far each layer's output still moves after each kept epoch (0: the initial "
              "weights)", notes=f"change_to_last: 1 - cosine(layer output at the epoch, at the last epoch "
              f"{len(history)}), mean over {len(x)} held-out images; share_left: that change as a share of the "
              "layer's change from the initial weights (per image, then the mean).")
    out.claims(claims, "claims", title="ZF Fig. 4: the paper's observation, decided over held-out images",
               notes=f"Early epoch {early}: the kept epoch nearest the paper's epoch 5 of 64 scaled to {len(history)} "
                     f"epochs; {len(x)} held-out images. New claim (there was no rule before). Trained-enough gate: "
                     f"{'passed' if gate.passed else 'FAILED'}: {gate.reason}.")
    out.table(structure, "conv1_filter_structure", title=f"{m.name} conv1: spectral concentration of W - W0 against "
              "white noise of the same shape (per filter)")
    return {"trained_enough": int(gate.passed), "epochs_shown": len(epochs), "maps": len(grid), "final_val_top1": float(history.val_top1.iloc[-1])}
