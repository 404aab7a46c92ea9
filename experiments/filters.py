"""Krizhevsky 2012 Fig. 3: the first-layer filters as an RGB grid, and feature maps of chosen layers."""

from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn

from cnnvis.config import ExperimentConfig
from cnnvis.hooks import activations
from cnnvis.models import get_layer
from cnnvis.plotting.filters import feature_maps, filter_grid
from cnnvis.runner import images_from_config, model_from_config


@dataclass
class Config(ExperimentConfig):
    layers: Optional[list[str]] = None  # None: four layers spread over the model's depth
    image: int = 0  # which image of the dataset to show the feature maps of
    maps_per_layer: int = 12  # the most active channels of each layer


def spread_layers(model, n: int = 4) -> list[str]:
    """``n`` readable layers of the conv trunk, from first to last."""
    feature_layers = [name for name, path in model.layers.items() if path.startswith("features.")]
    picks = torch.linspace(0, len(feature_layers) - 1, min(n, len(feature_layers))).round().long().unique()
    return [feature_layers[i] for i in picks]


def main(cfg, out):
    images = images_from_config(cfg)  # data first: a missing dataset fails before anything is written
    model = model_from_config(cfg)
    first_conv = next(m for m in model.features.modules() if isinstance(m, nn.Conv2d))
    weights = model.weights_source
    out.figure(filter_grid(first_conv.weight, f"{cfg.model.name} conv1: {first_conv.out_channels} filters "
                           f"{first_conv.kernel_size[0]}x{first_conv.kernel_size[1]}/{first_conv.stride[0]} ({weights})"),
               "conv1_filters")

    index = min(cfg.experiment.image, len(images) - 1)
    layers = list(cfg.experiment.layers or spread_layers(model))
    for name in layers:
        get_layer(model, name)  # fail before computing anything if a name is wrong
    x = images.tensors([index], cfg.model.input_size)
    acts = {name: a[0] for name, a in activations(model, x, layers).items() if a.ndim == 4}
    channels = {name: a.mean((1, 2)).argsort(descending=True)[: cfg.experiment.maps_per_layer].tolist()
                for name, a in acts.items()}
    label = images.labels[index]
    caption = images.classes[label] if label >= 0 else "unlabelled"
    out.figure(feature_maps(x[0], acts, channels, f"{cfg.model.name}: most active feature maps of "
                            f"{images.name}[{index}] ({caption})"), "feature_maps")
    return {"conv1_filters": first_conv.out_channels, "layers_shown": len(acts)}
