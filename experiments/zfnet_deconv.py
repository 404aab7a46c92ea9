"""Zeiler & Fergus 2013 Fig. 2: for chosen feature maps of each layer, the top-9 activations over a dataset
projected back to pixel space by the deconvnet, beside the image patches under them."""

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd
import torch

from cnnvis.config import ExperimentConfig
from cnnvis.deconvnet import METHODS, deconv_project, guided_project, has_switches
from cnnvis.examples import chance_purity, label_purity, pick_maps
from cnnvis.from_config import images_from_config, model_from_config, shard_plan_from_config
from cnnvis.gate import figure_note, read_gate
from cnnvis.mining import top_activations
from cnnvis.models import CNN, resolve_layers
from cnnvis.plotting.deconv import projection_tile, square_tile, top9_figure
from cnnvis.receptive_field import crop_patch, geometry
from cnnvis.runner import resolve_device


MODEL_KINDS = [CNN]  # the networks it runs (cnnvis.config.check_model_kind)


@dataclass
class Config(ExperimentConfig):
    layers: Optional[list[str]] = None  # None: the model's Fig. 2 layers (conv1..conv5, stage1..stage7, ...)
    maps_per_layer: int = 9  # feature maps shown per layer (a seeded random pick of those that fire)
    channels: Optional[list[int]] = None  # show these feature maps instead (in every layer)
    k: int = 9  # top activations per feature map (the paper's 9)
    batch_size: int = 32
    tile: int = 40  # pixels per projection / patch tile
    method: str = "auto"  # deconvnet: auto | switches | autograd


def main(cfg, out, record):
    e = cfg.experiment
    if e.method not in METHODS:
        raise ValueError(f"experiment.method={e.method!r}; choose one of {', '.join(METHODS)}")
    images = images_from_config(cfg, record)  # data first: a missing dataset fails before anything is written
    plan = shard_plan_from_config(cfg)  # before the device: under torchrun it picks this rank's GPU
    device = resolve_device(cfg.device)
    model = model_from_config(cfg, record, device)
    # a trained checkpoint is shown as the paper's figure only when its training run passed the gate
    gate = read_gate(Path(cfg.model.checkpoint).parent) if cfg.model.checkpoint else None
    layers = resolve_layers(model, e.layers, "feature_maps", "experiment.layers")
    maps_per_layer = e.maps_per_layer
    if cfg.smoke:  # the whole path on the first and last layer, two maps each
        layers, maps_per_layer = list(dict.fromkeys([layers[0], layers[-1]])), min(maps_per_layer, 2)
    size = cfg.model.input_size
    top = top_activations(model, images, layers, k=e.k, batch_size=e.batch_size, size=size, plan=plan)
    if top is None:  # this process wrote its shards; the merging one makes the figures and tables
        return plan.summary()
    rng = np.random.default_rng(cfg.seed)
    labels = np.asarray(images.labels)
    has_labels = (labels >= 0).all()
    chance = chance_purity(labels, top[layers[0]].k, rng) if has_labels else float("nan")
    weights = model.weights_source
    rows, metrics = [], {}
    for name in layers:
        t, geo = top[name], geometry(model, name, size)
        switches = has_switches(model, name, (3, size, size))
        shown = []
        for ch in pick_maps(t, maps_per_layer, rng, e.channels):
            idx, ys, xs = t.image_index[ch], t.y[ch], t.x[ch]
            x = images.tensors(idx.numpy(), size).to(device)
            where = torch.stack([ys, xs], 1)
            if switches:
                proj = deconv_project(model, x, name, ch, location=where, method=e.method).cpu()
            else:  # a deconvnet projection would ignore the image: guided backprop, as Springenberg et al.
                proj = guided_project(model, x, name, ch, location=where).cpu()
            boxes = [geo.box(int(y), int(xx)) for y, xx in zip(ys, xs)]
            shown.append({
                "channel": ch,
                "projections": [projection_tile(crop_patch(p, b), e.tile) for p, b in zip(proj, boxes)],
                "patches": [square_tile(crop_patch(img, b), e.tile) for img, b in zip(x.cpu(), boxes)],
            })
        shown_as = ("deconvnet projections" if switches else "GUIDED BACKPROP, not deconvnet (no max-pool switches "
                    "below this layer: a deconvnet projection would not depend on the image)")
        fig = top9_figure(shown, f"{cfg.model.name} ({weights}) {name}: top-{t.k} activations of {len(shown)} "
                          f"feature maps over {len(images)} {images.name} images\n{shown_as}; field {geo.field[0]} px, "
                          f"stride {geo.stride[0]}; each projection contrast-normalized on its own"
                          + (figure_note(gate) if gate is not None else ""),
                          projection_heading="deconvnet projections" if switches else "guided backprop projections")
        out.figure(fig, f"{name}")
        purity = [label_purity(labels[t.image_index[c].numpy()]) for c in range(len(t.values))] if has_labels else [np.nan]
        rows.append({
            "layer": name, "projection": "deconvnet (switches)" if switches else "guided backprop (no switches)",
            "feature maps": len(t.values), "map size": f"{geo.rows.size}x{geo.cols.size}",
            "receptive field (px)": geo.field[0], "stride (px)": geo.stride[0],
            "maps firing in all top-k": int((t.values[:, -1] > 0).sum()),
            "top-k class purity (ours)": float(np.mean(purity)), "chance purity": chance,
            "paper (ZF 2013)": "qualitative: strong grouping in each map, more invariance in higher layers",
        })
        metrics[f"purity_{name}"] = float(np.mean(purity))
    out.table(pd.DataFrame(rows), "layers", title=f"Top-{top[layers[0]].k} mining: {cfg.model.name} on {images.name}",
              notes=NOTES.format(model=cfg.model.name, weights=weights, n=len(images), data=images.name))
    judged = {"trained_enough": int(gate.passed), "gate": gate.reason} if gate is not None else {}
    return {"images": len(images), **metrics, **judged}


NOTES = """
{model} ({weights}) mined over {n} {data} images, one entry per image per feature map (its strongest
location). *Class purity*: the share of a map's top-k images that belong to its most frequent class,
averaged over all maps of the layer; *chance*: the same for k images drawn at random from the dataset.
Zeiler & Fergus give no number for Fig. 2 (they show 9 projections per map over the 50,000 ImageNet
validation images for their trained ZFNet); the purity is our measure of the grouping they describe.
Receptive fields are the theoretical ones from the layer geometry (patches are clipped to the image).
Column *projection*: on a layer with max-pooling below it the figure shows the paper's deconvnet (switch-based
where the network is a plain chain, else autograd with the deconvnet rule at every rectifier). Below a layer
without max-pooling (all of EfficientNet-Lite0: strided convs, ReLU6, BatchNorm in eval, residual sums; ZFNet's
conv1) the deconvnet is a fixed linear map of the seed that does not depend on the image (Mahendran & Vedaldi
2016), so the figure shows guided backpropagation instead (Springenberg et al. 2015, proposed for this case),
seeded the same way and titled as such. A trained ZFNet checkpoint (model=zfnet model.checkpoint=PATH) shows
the deconvnet from conv2 up.
"""
