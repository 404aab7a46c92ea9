"""Krizhevsky 2012 Fig. 3: the first-layer filters as an RGB grid, and feature maps of chosen layers.

The Fig. 3 panel shows 11x11/4 filters as the paper's: conv1 of the AlexNet-style arm of the conv1 ablation
(ZFNet's layers with AlexNet's 11x11 stride-4 conv1, trained here on Caltech-101 by
``python run.py experiment=zfnet_conv1_ablation``), since torchvision's ImageNet AlexNet weights are not
available offline. The configured model's own first conv (EfficientNet-Lite0: a 3x3 stem) is a second,
separately titled panel.
"""

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch
from torch import nn

from cnnvis.config import ExperimentConfig
from cnnvis.gate import figure_note, read_gate
from cnnvis.from_config import images_from_config, model_from_config
from cnnvis.hooks import activations
from cnnvis.models import CNN, get_layer
from cnnvis.plotting.filters import feature_maps, filter_grid, trained_conv1

log = logging.getLogger(__name__)
PRODUCER = "python run.py experiment=zfnet_conv1_ablation"


MODEL_KINDS = [CNN]  # the networks it runs (cnnvis.config.check_model_kind)


@dataclass
class Config(ExperimentConfig):
    layers: Optional[list[str]] = None  # None: four layers spread over the model's depth
    image: int = 0  # which image of the dataset to show the feature maps of
    maps_per_layer: int = 12  # the most active channels of each layer
    # trainer checkpoint(s) (a glob) of the AlexNet-style net whose conv1 is drawn as Fig. 3; null: skip that panel
    alexnet_conv1_checkpoint: Optional[str] = (
        "${oc.env:CNNVIS_CHECKPOINTS,data/checkpoints}/zfnet-alexnet-conv1_caltech101-*/last.pt")


def spread_layers(model, n: int = 4) -> list[str]:
    """``n`` readable layers of the conv trunk, from first to last."""
    feature_layers = [name for name, path in model.layers.items() if path.startswith("features.")]
    picks = torch.linspace(0, len(feature_layers) - 1, min(n, len(feature_layers))).round().long().unique()
    return [feature_layers[i] for i in picks]


def main(cfg, out, record):
    e = cfg.experiment
    images = images_from_config(cfg, record)  # data first: a missing dataset fails before anything is written
    trained = trained_conv1(e.alexnet_conv1_checkpoint) if e.alexnet_conv1_checkpoint else None
    if e.alexnet_conv1_checkpoint and trained is None:
        message = (f"no checkpoint matches experiment.alexnet_conv1_checkpoint={e.alexnet_conv1_checkpoint}: "
                   f"run `{PRODUCER}` first (about 12 minutes on 2 cores), or set "
                   "experiment.alexnet_conv1_checkpoint=null to draw only the model's own first layer")
        if not cfg.smoke:
            raise FileNotFoundError(message)
        log.warning("smoke run without the Fig. 3 panel: %s", message)
    model = model_from_config(cfg, record)
    result = {}
    if trained is not None:
        weight, info = trained
        record.add_checkpoint(info["path"])
        k, n = weight.shape[-1], weight.shape[0]
        gate = read_gate(Path(info["path"]).parent)  # the conv1 ablation judged this run: only a learned one is Fig. 3
        out.figure(filter_grid(weight, f"Krizhevsky 2012 Fig. 3 layout: the {n} conv1 filters ({k}x{k}/4) of an "
                               f"AlexNet-style net (ZFNet layers, AlexNet conv1) trained here on Caltech-101\n"
                               f"(seed {info['seed']}, {info['epochs']} epochs; {info['path']})"
                               + figure_note(gate)), "krizhevsky_fig3_conv1",
                   shows=record.shown([], {}, [info["path"]]))
        result.update(alexnet_conv1_filters=n, trained_enough=gate.passed, gate=gate.reason)
    first_conv = next(m for m in model.features.modules() if isinstance(m, nn.Conv2d))
    out.figure(filter_grid(first_conv.weight, f"{cfg.model.name}'s own first layer ({model.weights_source}): "
                           f"{first_conv.out_channels} filters {first_conv.kernel_size[0]}x{first_conv.kernel_size[1]}"
                           f"/{first_conv.stride[0]}"), "conv1_filters")

    index = min(e.image, len(images) - 1)
    layers = list(e.layers or spread_layers(model))
    for name in layers:
        get_layer(model, name)  # fail before computing anything if a name is wrong
    x = images.tensors([index], cfg.model.input_size)
    acts = {name: a[0] for name, a in activations(model, x, layers).items() if a.ndim == 4}
    channels = {name: a.mean((1, 2)).argsort(descending=True)[: e.maps_per_layer].tolist()
                for name, a in acts.items()}
    label = images.labels[index]
    caption = images.classes[label] if label >= 0 else "unlabelled"
    out.figure(feature_maps(x[0], acts, channels, f"{cfg.model.name}: most active feature maps of "
                            f"{images.name}[{index}] ({caption})"), "feature_maps")
    return {**result, "conv1_filters": first_conv.out_channels, "layers_shown": len(acts)}
