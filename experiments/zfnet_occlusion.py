"""Zeiler & Fergus 2014 Fig. 7 (occlusion sensitivity) on a real ImageNet model, and the Sec. 4.2 claims behind it
decided over many images: the probability drop and the feature map's response under occlusion (all ImageNet
images), and whether the drop and the most sensitive position sit on the object (Caltech-101 object boxes, with a
linear Caltech-101 head), each against the strongest trivial baseline on the same images; the same measures on the
same architecture randomly initialised (fewer images) are the random-weights control.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from cnnvis.claims import with_control
from cnnvis.config import ExperimentConfig
from cnnvis.data import DatasetNotFoundError
from cnnvis.examples import pick_examples
from cnnvis.from_config import images_or_samples_from_config, model_from_config, shard_plan_from_config
from cnnvis.mining import top_activations
from cnnvis.models import CNN, build_model, layer_role, resolve_layers
from cnnvis.occlusion import occlusion_map
from cnnvis.occlusion_measures import (box_claims, caltech_localization, caltech_table, drop_table, examples_table,
                                       map_claims, panel_c, projection_method, quantitative_drop)
from cnnvis.plotting.occlusion import occlusion_figure

log = logging.getLogger(__name__)

MODEL_KINDS = [CNN]  # the networks it runs (cnnvis.config.check_model_kind)


@dataclass
class Config(ExperimentConfig):
    classes: list[int] = field(default_factory=lambda: [259, 479, 160])  # the paper's examples: Pomeranian, car wheel, Afghan hound
    layer: str | None = None  # None: the model's last conv layer (ZF's layer 5); its strongest map is panel (b)'s
    size: int = 48  # occluder side (px) for the figures; the paper gives none
    stride: int = 12
    batch_size: int = 16
    channels_last: bool = False
    incremental: bool = True  # exact incremental inference (cnnvis.incremental); false: one forward pass per position
    top_crops: int = 9  # panel (c): projections of the map's strongest activations in other images
    mining_images: int | None = 400  # a seeded random sample searched for those activations (None: all)
    # the quantitative parts: a coarser grid, so 1,300 images x all positions take minutes
    quant_size: int = 56
    quant_stride: int = 56
    quant_images: int | None = None  # a seeded random sample of the ImageNet images to score (None: all 1,300)
    caltech: bool = True
    caltech_train_per_class: int = 5  # linear-head training images per class (all 101 classes)
    caltech_eval_per_class: int | None = None  # held-out boxed images occluded per boxed class (None: all)
    on_box: float = 0.5  # an occluder is on the object when at least this share of its square lies in the box
    off_box: float = 0.1  # ... and off the object when at most this share does
    # the random-weights control (the same measures, randomly initialised weights): a seeded sample of this many
    # ImageNet images, and this many held-out boxed Caltech-101 images per class (its own linear head, the same
    # training images); about a fifth of the canonical run's occlusion passes
    control_images: int = 300
    control_caltech_per_class: int = 12


def stand_in(cfg, model) -> str:
    """Which network and weights ran, for titles and notes."""
    if cfg.model.name == "zfnet":
        return f"ZFNet ({model.weights_source})"
    return f"{cfg.model.name} ({model.weights_source}) stands in for ZFNet (no ImageNet-trained ZFNet offline)"


def main(cfg, out, record):
    images = images_or_samples_from_config(cfg, record)  # data first: a missing dataset fails before anything is written
    recorded = record.datasets[-1]["name"]  # its name in run.json (the sample-photo fallback renames the ImageSet)
    plan = shard_plan_from_config(cfg)
    model = model_from_config(cfg, record)
    e, size = cfg.experiment, cfg.model.input_size
    e.layer = resolve_layers(model, e.layer, "last_conv", "experiment.layer")
    rng = np.random.default_rng(cfg.seed)
    fill = images.mean_color()
    stride = e.size if cfg.smoke else e.stride  # smoke: non-overlapping squares, seconds not minutes
    engine = dict(batch_size=e.batch_size, channels_last=e.channels_last, incremental=e.incremental)
    mined = np.sort(rng.permutation(len(images))[: e.mining_images])
    top = top_activations(model, images.subset(mined), [e.layer], k=e.top_crops + 1, size=size, plan=plan)
    # Sec. 4.2 over every labelled image: the drop at the most sensitive position vs a random one
    occluder = dict(size=e.quant_size, stride=e.quant_stride, **engine)
    drop = quantitative_drop(model, images, e.layer, size, e.quant_images, fill, rng, plan, **occluder)
    # ... and on Caltech-101's object boxes: is the most sensitive position on the object?
    loc, n_train, n_prior = caltech_part(cfg, record, model, rng, occluder, e.caltech_eval_per_class, plan, "caltech")
    # the random-weights control: the same measures, randomly initialised weights, fewer images
    torch.manual_seed(cfg.seed)
    random_model = build_model(cfg.model.name, cfg.model.num_classes, pretrained=False, input_size=size).eval()
    control_rng = np.random.default_rng(cfg.seed)
    control_drop = quantitative_drop(random_model, images, e.layer, size, e.control_images, fill, control_rng, plan,
                                     "control-drop", **occluder)
    control_loc, _, _ = caltech_part(cfg, record, random_model, control_rng, occluder, e.control_caltech_per_class,
                                     plan, "control-caltech")
    if not plan.merges:  # this process wrote its shards; the merging one makes the figures and tables
        return plan.summary()
    method = projection_method(model, e.layer)
    who = stand_in(cfg, model)

    # Fig. 7: per example, (b) the strongest map under occlusion, (c) its projections, (d) p(true), (e) top class
    shown = []
    for example in pick_examples(images.labels, e.classes):
        x = images.tensors([example], size)[0]
        label = int(images.labels[example])
        maps = occlusion_map(model, x, layer=e.layer, target=label if label >= 0 else None, size=e.size,
                             stride=stride, fill=fill, progress=True, **engine)
        projection, others = panel_c(model, images, x, e.layer, maps.channel, top[e.layer], mined, example,
                                     e.top_crops, size, method)
        label_c = method if method == "deconvnet" else f"guided backprop (no max-pool switches in {cfg.model.name})"
        fig = occlusion_figure(x, maps, images.classes, maps.target, fill, projection, others, label_c,
                               title=f"{who}; {images.name} {images.paths[example].rsplit('/', 1)[-1]}")
        out.figure(fig, f"fig7_{images.classes[maps.target].replace(' ', '_').lower()}",
                   shows=record.shown([cfg.model.name], {recorded: len(mined)}))
        shown.append((example, x, maps))
    ex = examples_table(model, images, shown, e.layer, size)
    out.table(ex, "fig7_examples",
              title="Fig. 7 examples: what the occluder does (illustrations; the claims table decides)",
              notes=examples_notes(cfg, who, images.name, stride, maps, method, len(mined)))

    scored = "ImageNet" if images.name == "imagenet_val" else images.name  # the fallback's rows say it is one
    quant = drop_table(drop, scored) if len(drop) else []
    metrics = {"images": len(drop)}
    if len(drop):
        metrics.update(drop_sensitive=float((drop.p_clean - drop.p_sensitive).mean()),
                       drop_random=float((drop.p_clean - drop.p_random).mean()))
    if loc is not None:
        quant += caltech_table(loc)
        metrics.update(inside_box=float(loc.sensitive_inside_box.mean()),
                       inside_box_centre=float(loc.centre_inside_box.mean()))
    out.table(pd.DataFrame(quant, columns=["measure", "ours", "paper"]), "occlusion_quantitative",
              title="Occlusion: probability drop and localization",
              notes=quantitative_notes(cfg, model, who, images.name, len(drop), loc, n_train, n_prior))
    on_maps = with_control(map_claims(drop), map_claims(control_drop))
    on_boxes = with_control(box_claims(loc, e.on_box, e.off_box), box_claims(control_loc, e.on_box, e.off_box))
    ours = record.shown([cfg.model.name], {recorded: len(drop)})
    boxed = record.shown([cfg.model.name], {} if loc is None else {"caltech101": len(loc)})
    out.claims(on_maps + on_boxes, "claims", shows=[ours] * len(on_maps) + [boxed] * len(on_boxes),
               title="Zeiler & Fergus Sec. 4.2 claims vs what we observe",
               notes=claims_notes(cfg, who, len(control_drop), control_loc))
    metrics.update(examples=len(ex), occlusion_engine=maps.engine, control_images=len(control_drop),
                   control_caltech_images=0 if control_loc is None else len(control_loc))
    return metrics


def caltech_part(cfg, record, model, rng, occluder, per_class, plan, analysis):
    """``caltech_localization`` for ``model`` with ``per_class`` held-out boxed images per class (smoke: 3 training
    and 2 held-out images in each of 3 boxed classes), its held-out images sharded by ``plan``; (None, None, None)
    where Caltech-101 is off or missing."""
    e = cfg.experiment
    if not e.caltech:
        return None, None, None
    train, held_out, classes = (3, 2, 3) if cfg.smoke else (e.caltech_train_per_class, per_class, None)
    try:
        return caltech_localization(model, cfg.dataset.root, cfg.model.input_size, cfg.cache_dir,
                                    cfg.dataset.num_workers, train, held_out, e.on_box, e.off_box, cfg.seed, rng,
                                    n_classes=classes, record=record, plan=plan, analysis=analysis, **occluder)
    except DatasetNotFoundError as err:
        log.warning("Caltech-101 part skipped: %s", err)
        return None, None, None


def claims_notes(cfg, who, n_control, control_loc) -> str:
    e = cfg.experiment
    caltech = ("no Caltech-101 images" if control_loc is None else
               f"{len(control_loc)} held-out boxed Caltech-101 images (at most {e.control_caltech_per_class} per "
               f"class; its own linear head on the random features of the same training images)")
    return (f"{who}; its last conv stage `{e.layer}` stands for ZFNet's layer 5. Every verdict is decided over the "
            f"scored images (n); the three Fig. 7 examples only illustrate. Random-weights control: the same "
            f"measures on {cfg.model.name} randomly initialised (torch seed {cfg.seed}), on a seeded sample of "
            f"{n_control} ImageNet images and {caltech}. Old rules (before issue 23): the same conditions read "
            "'reproduced' or 'not reproduced' (no contradicted / inconclusive), with one bootstrap seed (0) for "
            "every claim.")


def examples_notes(cfg, who, dataset, stride, maps, method, n_mined) -> str:
    e = cfg.experiment
    return (f"{who}, {dataset} images at {cfg.model.input_size} px; grey occluder = the dataset's mean colour, "
            f"{e.size} px every {stride} px ({len(maps.ys)}x{len(maps.xs)} positions). Map = the channel of "
            f"`{e.layer}` with the largest total activation on the unoccluded image. `min_activation_covers_"
            f"strongest_unit`: the occluder position that lowers the map most covers the centre of the map's "
            f"strongest unit. Panel (c): {method} projections of that map's strongest activations in "
            f"{n_mined} mined images. Command: `python run.py experiment=zfnet_occlusion`.")


def quantitative_notes(cfg, model, who, dataset, n_scored, loc, n_train, n_prior) -> str:
    e = cfg.experiment
    sample = "all labelled" if e.quant_images is None else "a seeded random sample of the"
    notes = (f"{who}. {n_scored} {dataset} images ({sample} images), occluder {e.quant_size} px every "
             f"{e.quant_stride} px; drop = p(true, unoccluded) - p(true, occluded); mean [95 % bootstrap interval] "
             f"over images, shares with Wilson intervals; the random position is drawn uniformly from the same grid "
             f"(seed {cfg.seed}). The strongest map is the channel of `{e.layer}` with the largest total on the "
             f"unoccluded image; its drop is relative to that total.")
    if loc is None:
        return notes
    return notes + (
        f"\n\nCaltech-101: a logistic-regression head (scikit-learn) on frozen {cfg.model.name} "
        f"`{layer_role(model, 'late')}` features (what its last linear layer reads) of {n_train} images "
        f"({e.caltech_train_per_class} per class, 101 classes), none of them evaluated; {len(loc)} held-out "
        f"images with object boxes ({loc.category.nunique()} categories) "
        f"stretched to {cfg.model.input_size} px. Inside = the occluder's centre lies in the box. Baselines on the "
        f"same images: the image centre; a uniform position (the share of positions inside the box, i.e. the "
        f"box-area prior); the position inside the most of the {n_prior} training images' boxes. On the "
        f"object = at least {e.on_box:.0%} of the occluder's square in the box; off = at most "
        f"{e.off_box:.0%}.")
