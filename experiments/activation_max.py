"""Activation maximization (Erhan 2009, Simonyan 2013, Yosinski 2015): optimized images for channels of
several layers and for ImageNet classes, the activation each reaches against the strongest over real images,
and whether the model's top-1 on each class image is its class. ``experiment.preset=lucid`` uses Olah et al. 2017's
recipe instead (cnnvis.featurevis: Fourier 1/f and decorrelated-colour parametrization, Lucid's transforms, Adam)
beside its pixel-space baseline, and adds a diversity row for two units. In a ``--multirun`` sweep every job also
redraws ``multirun/sweep.png`` (one row per finished job) from the strips its siblings left."""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import pandas as pd
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode

from cnnvis import featurevis as fv
from cnnvis.activation_max import (PRESETS, cached_maxima, lucid_table_notes, maximize_units_and_classes, preset_lr,
                                   render_units_and_classes, summary_metrics, table_notes, with_overrides)
from cnnvis.config import ExperimentConfig
from cnnvis.data import imagenet_classes
from cnnvis.from_config import images_from_config, model_from_config
from cnnvis.models import CNN, build_model, resolve_layers
from cnnvis.plotting.activation_max import class_grid, unit_grid, write_sweep_row

# A varied set: fish, birds, dog, big cat, insect, objects, vehicle, fruit, food, scene.
DEFAULT_CLASSES = [1, 130, 145, 207, 291, 323, 417, 504, 817, 948, 963, 980]


MODEL_KINDS = [CNN]  # the networks it runs (cnnvis.config.check_model_kind)


@dataclass
class Config(ExperimentConfig):
    preset: str = "yosinski1"  # none | simonyan | yosinski1..4 (Yosinski Table 1; the fields below override it)
    # | lucid | lucid_pixel (Olah et al. 2017, cnnvis.featurevis; only the lucid_* fields below apply)
    l2: Optional[float] = None
    decay: Optional[float] = None
    blur_every: Optional[int] = None
    blur_sigma: Optional[float] = None
    norm_pct: Optional[float] = None
    contrib_pct: Optional[float] = None
    jitter: Optional[int] = 4
    target: str = "channel"  # channel: a channel's mean activation; unit: its centre unit
    layers: Optional[list[str]] = None  # None: the model's activation-maximization layers
    channels: Optional[list[int]] = None  # None: channels_per_layer channels evenly spread over each layer
    channels_per_layer: int = 6
    classes: list[int] = field(default_factory=lambda: list(DEFAULT_CLASSES))
    size: int = 112  # side of the optimized images (and of the real images they are compared with)
    steps: int = 100
    lr: Optional[float] = None  # normalized step; None: the preset's (cnnvis.activation_max.PRESET_LR, else 0.15)
    batch_size: int = 50  # real-image pass
    lucid_lr: float = 0.05  # Adam's learning rate for the lucid presets (Lucid's default)
    diversity_images: int = 4  # lucid: images per unit in the diversity row (two units)
    diversity_weight: float = 20.0  # lucid: weight of the Gram dissimilarity added to the channel objective
    zfnet_checkpoint: Optional[str] = None  # a trained zfnet: its units and classes too
    zfnet_input_size: int = 224  # the size that checkpoint was trained at (its fc6 depends on it)
    zfnet_layers: list[str] = field(default_factory=lambda: ["conv2", "conv3", "conv5"])


def maxima_of(cfg, tag, model, images, size, layers, checkpoint) -> dict:
    return cached_maxima(cfg.cache_dir, tag, cfg.model.pretrained, model, images, size, layers,
                         cfg.experiment.batch_size, checkpoint)


def optimize_model(cfg, tag, model, images, size, layers, classes, class_names, reg, checkpoint=None):
    """Channel (or unit) images per layer and class images for one model: rows of the table, figures."""
    e = cfg.experiment
    maxima = maxima_of(cfg, tag, model, images, size, layers, checkpoint)
    return maximize_units_and_classes(
        model, tag, maxima, layers, e.channels, 2 if cfg.smoke else e.channels_per_layer, e.target, classes,
        class_names, size=size, steps=3 if cfg.smoke else e.steps, lr=preset_lr(e.preset, e.lr), reg=reg,
        seed=cfg.seed, progress=True,
        mean=tuple(images.mean_color().tolist()))  # Yosinski's "zero": the mean image (here its colour)


def lucid_model(cfg, tag, model, images, size, layers, classes, class_names, checkpoint=None):
    """The pixel-space baseline and the preset (Olah et al. 2017) for each layer's channels and the classes, and a
    diversity row for two channels of the last layer: rows of the table and the figures' panels."""
    e = cfg.experiment
    maxima = maxima_of(cfg, tag, model, images, size, layers, checkpoint)
    return render_units_and_classes(model, tag, maxima, layers, e.channels, 2 if cfg.smoke else e.channels_per_layer,
                                    classes, class_names, e.preset, size, 3 if cfg.smoke else e.steps, e.lucid_lr,
                                    cfg.seed, e.diversity_images, e.diversity_weight)


def lucid_main(cfg, out, models):
    """``main`` for the lucid presets: figures, the table of activations and spectra, metrics."""
    e = cfg.experiment
    all_rows, metrics = [], {}
    steps = 3 if cfg.smoke else e.steps
    for tag, net, data, side, net_layers, net_classes, net_names, checkpoint in models:
        rows, panels, diversity_panels = lucid_model(cfg, tag, net, data, side, net_layers, net_classes, net_names,
                                                     checkpoint)
        unit_panels = {k: v for k, v in panels.items() if not k.startswith("classes")}
        out.figure(unit_grid(unit_panels, f"{tag}: images maximizing a channel's mean activation, pixel space "
                                          f"(lucid_pixel) above {e.preset} (Fourier 1/f, decorrelated colour, "
                                          f"Lucid's transforms); {side} px, {steps} Adam steps; value (ratio to the "
                                          f"real-image max)"), f"units_{tag}")
        out.figure(unit_grid({k: v for k, v in panels.items() if k.startswith("classes")},
                             f"{tag}: class images maximizing the pre-softmax score, lucid_pixel above {e.preset}; "
                             f"top-1 of the model on each"), f"classes_{tag}")
        out.figure(unit_grid(diversity_panels, f"{tag}: diversity ({e.preset}, + {e.diversity_weight:g} x Gram "
                                               f"dissimilarity within each row); channel mean; 1 - cos(Gram) with "
                                               f"the row's others"), f"diversity_{tag}")
        frame = pd.DataFrame(rows)
        for name, part in frame.groupby("parametrization"):
            # the preset's own numbers under the names every preset uses (one sweep column each); the pixel
            # baseline drawn beside it keeps its parametrization in the name
            prefix = tag if name == e.preset else f"{tag}_{name}"
            metrics.update(summary_metrics(prefix, part.to_dict("records"), "channel"))
        all_rows += rows
        if tag == cfg.model.name and HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
            preset_rows = [r for r in rows if r["parametrization"] == e.preset]
            layer_panels = {k.split("\n")[0]: v for k, v in unit_panels.items() if k.endswith(f"\n{e.preset}")}
            write_sweep_row(out.path("sweep_strip.png"), out.path("sweep_row.json"), Path(HydraConfig.get().sweep.dir),
                            tag, e.preset, fv.PRESETS[e.preset], preset_rows, layer_panels,
                            panels[f"classes\n{e.preset}"], tile=96)
    table = pd.DataFrame(all_rows)
    out.table(table, "activation_max", title="Activation reached and spectrum slope: pixel space vs Olah et al. 2017",
              notes=lucid_table_notes(len(models[0][2]), models[0][2].name, e.preset, e.lucid_lr, steps,
                                      [side for _, _, _, side, *_ in models]))
    return metrics


def main(cfg, out, record):
    e = cfg.experiment
    if e.preset not in PRESETS and e.preset not in fv.PRESETS:
        raise ValueError(f"unknown experiment.preset={e.preset!r}; choose one of {', '.join([*PRESETS, *fv.PRESETS])}")
    if e.preset in fv.PRESETS and e.target != "channel":
        raise ValueError(f"experiment.preset={e.preset} optimizes channel means: set experiment.target=channel")
    if e.target not in ("channel", "unit"):
        raise ValueError(f"experiment.target={e.target!r}: use 'channel' (mean of the map) or 'unit' (its centre)")
    size = 64 if cfg.smoke else e.size
    cfg.model.input_size = size  # the model sees only images of this side (AlexNet's and ZFNet's fc6 is sized by it)
    images = images_from_config(cfg, record, size)  # data first: a missing dataset fails before anything is written
    zf_images = images_from_config(cfg, record, e.zfnet_input_size) if e.zfnet_checkpoint else None
    model = model_from_config(cfg, record)
    layers = resolve_layers(model, e.layers, "activation_max", "experiment.layers")  # fails before any optimization
    layers = layers[:2] if cfg.smoke else layers
    classes = list(e.classes[:3] if cfg.smoke else e.classes)
    names = imagenet_classes()
    models = [(cfg.model.name, model, images, size, layers, classes, names, None)]
    if e.zfnet_checkpoint:
        zf = build_model("zfnet", checkpoint=e.zfnet_checkpoint, input_size=e.zfnet_input_size).eval()
        record.add_checkpoint(e.zfnet_checkpoint)
        n_out = zf.head.out_features
        zf_classes = [k for k in classes if k < n_out] if n_out == 1000 else list(range(min(n_out, len(classes))))
        blob = torch.load(e.zfnet_checkpoint, map_location="cpu", weights_only=True)
        zf_names = (list(blob["classes"]) if isinstance(blob, dict) and "classes" in blob
                    else names if n_out == 1000 else [f"class {k}" for k in range(n_out)])
        zf_layers = list(e.zfnet_layers[:2] if cfg.smoke else e.zfnet_layers)
        models.append(("zfnet", zf, zf_images, e.zfnet_input_size, zf_layers, zf_classes, zf_names, e.zfnet_checkpoint))

    if e.preset in fv.PRESETS:
        return lucid_main(cfg, out, models)
    reg = with_overrides(PRESETS[e.preset], l2=e.l2, decay=e.decay, blur_every=e.blur_every, blur_sigma=e.blur_sigma,
                         norm_pct=e.norm_pct, contrib_pct=e.contrib_pct, jitter=e.jitter)
    all_rows, metrics = [], {}
    for tag, net, data, side, net_layers, net_classes, net_names, checkpoint in models:
        rows, unit_panels, class_panel = optimize_model(cfg, tag, net, data, side, net_layers, net_classes, net_names,
                                                        reg, checkpoint)
        what = "mean activation" if e.target == "channel" else "centre unit"
        out.figure(unit_grid(unit_panels, f"{tag}: images maximizing a channel's {what} ({e.preset}, {side} px, "
                                          f"{3 if cfg.smoke else e.steps} steps); value (ratio to the real-image max)"),
                   f"units_{tag}")
        out.figure(class_grid(*class_panel, f"{tag}: class images maximizing the pre-softmax score ({e.preset}); "
                                            f"top-1 of the model on each"), f"classes_{tag}")
        metrics.update(summary_metrics(tag, rows, e.target))
        all_rows += rows
        if tag == cfg.model.name and HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
            write_sweep_row(out.path("sweep_strip.png"), out.path("sweep_row.json"), Path(HydraConfig.get().sweep.dir),
                            tag, e.preset, reg, rows, unit_panels, class_panel, tile=96, lr=preset_lr(e.preset, e.lr))

    table = pd.DataFrame(all_rows)
    hits = {tag: f"{metrics[f'{tag}_class_top1_rate']:.0%}" for tag, *_ in models}
    out.table(table, "activation_max", title="Activation reached by optimized images vs the strongest over real images",
              notes=table_notes(e.target, len(images), images.name, hits, e.preset, reg, preset_lr(e.preset, e.lr),
                                size, 3 if cfg.smoke else e.steps))
    return metrics
