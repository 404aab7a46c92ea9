"""Explain your own images: for each image, the model's top-5 classes and each chosen attribution method's map
of its top-1 class, one figure per image, plus a table of the predictions.

Any folder works (``dataset=imagefolder dataset.root=PATH``: class sub-folders or loose image files), as does any
other dataset; nothing else is read. Top-1 agreement with the labels is reported only when the labels are
ImageNet classes (the model's own): a folder's class names are not."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import pandas as pd
import torch

from cnnvis.cams import METHODS, as_map, make_method
from cnnvis.config import ExperimentConfig
from cnnvis.data import imagenet_classes
from cnnvis.examples import labels_are_model_classes
from cnnvis.from_config import images_from_config, model_from_config
from cnnvis.models import CNN, TRANSFORMER, frozen, resolve_layers
from cnnvis.plotting.explain import explain_figure, figure_names
from cnnvis.stats import proportion


MODEL_KINDS = [CNN, TRANSFORMER]  # the networks it runs (cnnvis.config.check_model_kind)


@dataclass
class Config(ExperimentConfig):
    methods: list[str] = field(default_factory=lambda: ["gradcam", "gradcam++", "layercam", "saliency",
                                                        "guided_backprop"])
    layer: Optional[str] = None  # the CAM methods' layer; None: the model's last conv layer
    images: Optional[int] = None  # explain the first N images only (None: all)
    batch_size: int = 8


def class_names(model, n_classes: int) -> list[str]:
    """ImageNet's names for a 1000-way head, else 'class k'."""
    if n_classes == 1000:
        return [n.split(",")[0] for n in imagenet_classes()]
    return [f"class {k}" for k in range(n_classes)]


def main(cfg, out, record):
    e = cfg.experiment
    unknown = sorted(set(e.methods) - set(METHODS))
    if unknown:
        raise ValueError(f"unknown method(s) {unknown} in experiment.methods; available: {', '.join(METHODS)}")
    images = images_from_config(cfg, record)  # data first: a missing folder fails before anything is written
    model = frozen(model_from_config(cfg, record))
    e.layer = resolve_layers(model, e.layer, "last_conv", "experiment.layer")
    n = len(images) if e.images is None else min(e.images, len(images))
    x = images.tensors(range(n), cfg.model.input_size)
    with torch.no_grad():
        probs = torch.cat([model(x[i:i + e.batch_size]) for i in range(0, n, e.batch_size)]).softmax(1)
    top = probs.topk(min(5, probs.shape[1]), dim=1)
    names = class_names(model, probs.shape[1])
    maps = {}
    for method in e.methods:
        with make_method(method, model, e.layer, batch_size=e.batch_size) as attribution:
            maps[method] = as_map(attribution.attribute(x, target=top.indices[:, 0]))

    rows = []
    figures = figure_names(images.paths[:n])
    for i in range(n):
        file = Path(images.paths[i]).name
        label = images.classes[images.labels[i]] if images.labels[i] >= 0 else "-"
        top5 = [(names[c], float(p)) for c, p in zip(top.indices[i].tolist(), top.values[i].tolist())]
        out.figure(explain_figure(x[i], {m: v[i] for m, v in maps.items()}, top5,
                                  f"{file}: {cfg.model.name} ({model.weights_source}); maps of the top-1 class "
                                  f"{names[top.indices[i, 0]]}, CAM layer {e.layer}"), figures[i])
        rows.append({"figure": f"{figures[i]}.png", "image": file, "label": label,
                     "top1": top5[0][0], "p_top1": round(top5[0][1], 4),
                     "top5": "; ".join(f"{name} {p:.2f}" for name, p in top5)})
    table = pd.DataFrame(rows)
    metrics = {"images": n}
    labelled = images.labels[:n] >= 0
    if labels_are_model_classes(images, probs.shape[1]) and labelled.any():
        agreement = proportion(top.indices[:, 0].numpy()[labelled] == images.labels[:n][labelled])
        accuracy = (f"Top-1 agreement with the labels (ImageNet classes) over the {int(labelled.sum())} labelled "
                    f"images: {agreement.format()} (Wilson 95 % interval).")
        metrics["top1"] = agreement.value
    else:
        accuracy = ("No accuracy: this dataset's labels are not the model's ImageNet classes (or there are none), "
                    "so predictions and labels are shown side by side only.")
    out.table(table, "predictions", title=f"{cfg.model.name} on {images.name}: top-5 classes per image",
              notes=f"{n} images at {cfg.model.input_size} px, {model.weights_source}. Maps explain each image's "
                    f"top-1 class: {', '.join(e.methods)} (CAM-family methods at `{e.layer}`; input-space ones "
                    f"reduced by max_c |.|). {accuracy} Command: `python run.py experiment=explain "
                    f"dataset=imagefolder dataset.root=PATH`.")
    return metrics
