"""Girshick et al. 2014 (R-CNN) Fig. 4: the top image patches of units of a layer whose receptive field is a
patch of the image (pool5 for AlexNet / ZFNet / VGG16; stage4 for EfficientNet-Lite0), one row per unit."""

import logging
from dataclasses import dataclass
from typing import Optional

import numpy as np
import pandas as pd

from cnnvis.config import ExperimentConfig
from cnnvis.examples import chance_purity, label_purity, pick_maps
from cnnvis.from_config import images_from_config, model_from_config, shard_plan_from_config
from cnnvis.mining import top_activations
from cnnvis.models import CNN, resolve_layers
from cnnvis.plotting.deconv import square_tile, unit_rows_figure
from cnnvis.receptive_field import crop_patch, geometry
from cnnvis.runner import resolve_device

log = logging.getLogger(__name__)


MODEL_KINDS = [CNN]  # the networks it runs (cnnvis.config.check_model_kind)


@dataclass
class Config(ExperimentConfig):
    layer: Optional[str] = None  # None: the model's 'patches' role, a layer whose receptive field is a patch
    units: Optional[list[int]] = None  # None: a seeded random pick of n_units among those that fire
    n_units: int = 6  # the paper's six rows
    k: int = 16  # the paper's top 16 regions per unit
    batch_size: int = 32
    tile: int = 64


def main(cfg, out, record):
    e = cfg.experiment
    images = images_from_config(cfg, record)  # data first: a missing dataset fails before anything is written
    plan = shard_plan_from_config(cfg)  # before the device: under torchrun it picks this rank's GPU
    device = resolve_device(cfg.device)
    model = model_from_config(cfg, record, device)
    layer = resolve_layers(model, e.layer, "patches", "experiment.layer")
    size = cfg.model.input_size
    if geometry(model, layer, size).field[0] >= size:
        log.warning("%s's receptive field covers the whole %d px image: its 'patches' are whole images; "
                    "set experiment.layer to an earlier layer for patches", layer, size)
    top = top_activations(model, images, [layer], k=e.k, batch_size=e.batch_size, size=size, plan=plan)
    if top is None:  # this process wrote its shards; the merging one makes the figure and table
        return plan.summary()
    t = top[layer]
    geo = geometry(model, layer, size)
    rng = np.random.default_rng(cfg.seed)
    labels = np.asarray(images.labels)
    names = [images.classes[y] if y >= 0 else "-" for y in labels]
    last = [n for n, path in model.layers.items() if path.startswith("features.")][-1]
    rows, table = [], []
    for unit in pick_maps(t, min(e.n_units, 2) if cfg.smoke else e.n_units, rng, e.units):
        idx = t.image_index[unit].numpy()
        x = images.tensors(idx, size)
        boxes = [geo.box(int(y), int(xx)) for y, xx in zip(t.y[unit], t.x[unit])]
        rows.append({"unit": unit, "values": t.values[unit].tolist(), "labels": [names[i] for i in idx],
                     "patches": [square_tile(crop_patch(img, b), e.tile) for img, b in zip(x, boxes)]})
        areas = [(b[1] - b[0]) * (b[3] - b[2]) / (size * size) for b in boxes]
        table.append({"unit": unit, "top activation": float(t.values[unit, 0]),
                      f"{t.k}th activation": float(t.values[unit, -1]),
                      "class purity": label_purity(labels[idx]) if (labels >= 0).all() else np.nan,
                      "most frequent class": images.classes[np.bincount(labels[idx]).argmax()] if (labels >= 0).all() else "-",
                      "patch area / image": float(np.mean(areas))})
    weights = model.weights_source
    out.figure(unit_rows_figure(rows, f"{cfg.model.name} ({weights}) {layer}: top-{t.k} patches of {len(rows)} "
                                f"units over {len(images)} {images.name} images (field {geo.field[0]} px at "
                                f"{size} px input; value, class above each)"), "top_patches")
    chance = chance_purity(labels, t.k, rng) if (labels >= 0).all() else float("nan")
    out.table(pd.DataFrame(table), "units", title=f"Top-{t.k} patches of {layer} units: {cfg.model.name} on {images.name}",
              notes=NOTES.format(model=cfg.model.name, weights=weights, layer=layer, k=t.k, n=len(images), data=images.name,
                                 field=geo.field[0], size=size, stride=geo.stride[0], chance=chance,
                                 share=min(geo.field[0], size) / size, last=last, last_field=geometry(model, last, size).field[0]))
    return {"images": len(images), "mean_class_purity": float(np.nanmean([r["class purity"] for r in table])),
            "chance_purity": chance}


NOTES = """
Ours: {model} ({weights}), unit = one channel of {layer} at its strongest location in each image, top
{k} over {n} whole {data} images; a unit's field is {field} px at {size} px input (stride {stride}), clipped
to the image: "patch area / image" is the mean share of the image the patches cover. Chance class purity
for random image sets of the same size: {chance:.3f} (imagenet-val-1300 has 1 to 2 images of most of its
725 classes, so a unit's top {k} can hardly share one class: the grouping shows in the figure, by shape and
texture, rather than in this number).
Paper (Girshick et al. 2014, Fig. 4): AlexNet fine-tuned on VOC 2007, pool5 units (6x6x256; each sees 195x195
of the 227x227 input), top 16 of about 10 million region proposals of VOC 2007 test, no number reported.
We mine whole images, not region proposals, so a patch is the unit's receptive field in the image rather than
in a warped proposal. The layer is chosen so that the field is a patch, as pool5's is ({field} of {size} px
here, {share:.0%} of the image's side; pool5: 195 of 227, 86 %); {model}'s last conv layer ({last}) sees
{last_field} px, so at {size} px its "patches" would be whole images.
"""
