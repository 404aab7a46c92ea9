"""The CAM / Grad-CAM family side by side (Grad-CAM Fig. 1, Score-CAM Fig. 1 layout) on EfficientNet-Lite0,
on ImageNet validation images and on the Caltech-101 images with object boxes, and scored as their papers
score them: localization error (CAM box rule at 15% / 20%), pointing game, Average Drop / Increase in
Confidence (Grad-CAM++) and deletion / insertion AUC (RISE).

Every map explains the model's top-1 class. Caltech-101 images go through the ImageNet model (its
1,000 classes do not include Caltech's), so localization there is class-agnostic: the box of the predicted
class's map against the object's box ("GT-known" localization).

The claims table decides the papers' comparisons (Chattopadhay 2018, Wang 2020, Zhou 2016, Selvaraju 2017) on paired
per-image differences, each method also against the trivial baselines, with the same claims on the same architecture
with random weights beside them (the random-weights control).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import torch

from cnnvis.cams import ALL_METHODS
from cnnvis.claims import with_control
from cnnvis.config import DatasetConfig, ExperimentConfig, ResizeMode
from cnnvis.data import caltech101_boxes, decode_to_cache, imagenet_classes, index_caltech101
from cnnvis.deconvnet import has_switches
from cnnvis.from_config import images_from_config, model_from_config, shard_plan_from_config
from cnnvis.gap import feeds_gap_head
from cnnvis.localization import (Comparison, Published, claims_notes, control_claims, image_range, metrics_notes,
                                 metrics_table, paper_claims, published_by_method, score_dataset, summary_metrics,
                                 with_paper_numbers)
from cnnvis.models import CNN, TRANSFORMER, UnsupportedModelError, fold_batchnorm, frozen, resolve_layers
from cnnvis.plotting.cams import class_figures, curves_figure, method_grid
from cnnvis.stats import proportion

# The papers' numbers as printed (other networks, other images), each with its table and row.
PUBLISHED = [
    Published("Zhou et al. 2016", "Tab. 2, row VGGnet-GAP (CAM), top-1 loc. error", "VGGnet-GAP, ILSVRC val",
              "loc_err_20", {"cam": 57.20}),
    Published("Selvaraju et al. 2017", "Tab. 1, row VGG-16 Grad-CAM, top-1 loc. error", "VGG-16, ILSVRC-15 val",
              "loc_err_15", {"gradcam": 56.51}),
    Published("Chattopadhay et al. 2018", "Tab. 1, row 'Average Drop %'", "VGG-16, ILSVRC-2012 val",
              "average_drop", {"gradcam": 46.56, "gradcam++": 36.84}),
    Published("Chattopadhay et al. 2018", "Tab. 1, row '% Incr. in Confidence'", "VGG-16, ILSVRC-2012 val",
              "increase_in_confidence", {"gradcam": 13.42, "gradcam++": 17.05}),
    Published("Wang et al. 2020", "Tab. 1, row 'Average Drop (%)'", "VGG-16, ILSVRC-2012 val",
              "average_drop", {"gradcam": 47.8, "gradcam++": 45.5, "scorecam": 31.5}),
    Published("Wang et al. 2020", "Tab. 1, row 'Average Increase (%)'", "VGG-16, ILSVRC-2012 val",
              "increase_in_confidence", {"gradcam": 19.6, "gradcam++": 18.9, "scorecam": 30.6}),
    Published("Petsiuk et al. 2018", "Tab. 2, row Grad-CAM, ResNet50 deletion", "ResNet-50, ILSVRC val",
              "deletion_auc", {"gradcam": 0.1232}),
    Published("Petsiuk et al. 2018", "Tab. 2, row Grad-CAM, ResNet50 insertion", "ResNet-50, ILSVRC val",
              "insertion_auc", {"gradcam": 0.6766}),
]
# The papers' comparisons this run decides (cnnvis.localization.paper_claims): faithfulness orderings between
# methods, then localization claims (no other method: the method's boxes against the trivial boxes).
COMPARISONS = [
    Comparison("Chattopadhay et al. 2018", "Tab. 1", "gradcam++", ("gradcam",)),
    Comparison("Wang et al. 2020", "Tab. 1", "scorecam", ("gradcam", "gradcam++")),
    Comparison("Zhou et al. 2016", "Tab. 2", "cam", metrics=("loc_err_20",)),
    Comparison("Selvaraju et al. 2017", "Tab. 1", "gradcam", metrics=("loc_err_15",)),
]


MODEL_KINDS = [CNN, TRANSFORMER]  # the networks it runs (cnnvis.config.check_model_kind)


@dataclass
class Config(ExperimentConfig):
    layer: Optional[str] = None  # None: the model's last conv layer (feeds GAP + fc: CAM is exact there)
    layercam_layers: Optional[list[str]] = None  # fused LayerCAM; None: the model's LayerCAM layers
    methods: list[str] = field(default_factory=lambda: list(ALL_METHODS))
    imagenet_images: int = 24
    caltech_images: int = 40  # annotated Caltech-101 images (24 categories), spread over the categories
    curve_images: int = 3  # of those, the first ones that also get deletion / insertion curves
    curve_steps: int = 10
    scorecam_images: int = 1  # Score-CAM (1,280 masked forward passes per image) is scored on the first ones only
    scorecam_batch_size: int = 4
    batch_size: int = 8
    figure_images: int = 4
    pointing_tolerance: float = 15.0
    # the random-weights control (same architecture, random init): the claims' methods on the first control_images
    # images of each set (0: no control), Score-CAM on the first control_scorecam_images of them (measured at
    # 1.1-1.6x a trained network's Score-CAM per image, ~29 s: 12 of each set add ~14-19 minutes to the canonical
    # run's 77, the other methods ~1)
    control_images: int = 96
    control_scorecam_images: int = 12


def caltech_with_boxes(cfg, record, n: int):
    """``n`` Caltech-101 images that have object boxes, round-robin over their categories (seeded), stretched
    to the input size so the whole object stays in view; with their boxes in those pixels."""
    root = cfg.dataset.root
    index = index_caltech101(root)
    n = min(n, 4) if cfg.smoke else n
    boxes = caltech101_boxes(index, root)
    rng = np.random.default_rng(cfg.seed)
    by_class = {}
    for i in rng.permutation([i for i, p in enumerate(index.paths) if p in boxes]):
        by_class.setdefault(int(index.labels[i]), []).append(int(i))
    order = [q[r] for r in range(max(map(len, by_class.values()), default=0)) for q in by_class.values() if r < len(q)]
    index = index.select(np.sort(np.asarray(order[:n], dtype=np.int64)))
    dcfg = DatasetConfig(name="caltech101", root=root, resize_mode=ResizeMode.stretch)
    images = decode_to_cache(index, cfg.model.input_size, "stretch", cfg.cache_dir, dcfg.num_workers, record)
    gt = np.stack([images.box_in_image(i, boxes[p]) for i, p in enumerate(images.paths)])
    return images, gt


def main(cfg, out, record):
    ecfg = cfg.experiment
    if cfg.smoke:  # seconds, not minutes: few curve points, one Score-CAM image, 64 px (each pass ~9x cheaper)
        ecfg.curve_images, ecfg.curve_steps, ecfg.scorecam_images = min(ecfg.curve_images, 2), 4, 1
        ecfg.control_images, ecfg.control_scorecam_images = min(ecfg.control_images, 4), 1
        cfg.model.input_size = min(cfg.model.input_size, 64)
    if ecfg.control_images == 1:
        raise ValueError("experiment.control_images must be 0 (no control) or at least 2 (an interval, and the "
                         "leave-one-out centre box, need two images)")
    unknown = sorted(set(ecfg.methods) - set(ALL_METHODS))
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; available: {', '.join(ALL_METHODS)}")
    imagenet = images_from_config(cfg, record)  # data first: a missing dataset fails before anything is written
    plan = shard_plan_from_config(cfg)
    caltech, caltech_boxes = caltech_with_boxes(cfg, record, ecfg.caltech_images)
    model = model_from_config(cfg, record)
    ecfg.layer = resolve_layers(model, ecfg.layer, "last_conv", "experiment.layer")
    if "cam" in ecfg.methods and not feeds_gap_head(model, ecfg.layer):
        raise UnsupportedModelError(
            f"cam (Zhou et al. 2016) needs a layer that only global average pooling and the linear head follow; "
            f"{cfg.model.name}'s {ecfg.layer} is not one: take cam out of experiment.methods, or use "
            f"model=resnet18 | efficientnet_lite0 (experiment=cam_gap trains GAP variants of alexnet, zfnet, vgg16)")
    ecfg.layercam_layers = resolve_layers(model, ecfg.layercam_layers, "layercam", "experiment.layercam_layers")
    frozen(model)
    size = cfg.model.input_size
    # the scores' many no-grad passes (AD / IC, deletion / insertion) run BatchNorm folded, NHWC: same outputs to rounding
    scorer = fold_batchnorm(model).to(memory_format=torch.channels_last)
    switches = has_switches(model, list(model.layers)[-1], (3, size, size))  # the deconvnet runs from the logits
    rng = np.random.default_rng(cfg.seed)
    pick = np.sort(rng.permutation(len(imagenet))[: ecfg.imagenet_images])
    method_options = dict(layer=ecfg.layer, layercam_layers=ecfg.layercam_layers, batch_size=ecfg.batch_size,
                          scorecam_batch_size=ecfg.scorecam_batch_size)
    sets = {"imagenet": (imagenet.tensors(pick, size), imagenet.labels[pick], None, imagenet.classes),
            "caltech101": (caltech.tensors(None, size), caltech.labels, caltech_boxes, caltech.classes)}
    scored = {}  # set -> (targets, score_dataset's scores, seconds, shown, predicted boxes)
    for name, (x, labels, boxes, classes) in sets.items():
        with torch.no_grad():
            logits = torch.cat([model(x[i:i + 32]) for i in range(0, len(x), 32)])
        targets = logits.argmax(1)
        if name == "imagenet" and plan.merges:
            pair, top5 = class_figures(model, x, logits, imagenet_classes(), ecfg.methods, ecfg.layer, ecfg.batch_size)
            one_image = record.shown([cfg.model.name], {imagenet.name: 1})
            if pair:
                out.figure(pair, "imagenet_class_pair", shows=one_image)
            if top5:
                out.figure(top5, "imagenet_cam_top5", shows=one_image)
        scored[name] = (targets, score_dataset(
            model, scorer, x, targets, list(ecfg.methods), method_options, ecfg.scorecam_images, ecfg.figure_images,
            ecfg.curve_images, ecfg.curve_steps, ecfg.pointing_tolerance, boxes, name, plan, name))
    if ecfg.control_images:
        control, control_seconds = control_claims(
            cfg.model.name, cfg.model.num_classes, size, cfg.seed,
            {name: (x, boxes) for name, (x, _, boxes, _) in sets.items()}, ecfg.methods, method_options, COMPARISONS,
            PUBLISHED, ecfg.control_images, ecfg.control_scorecam_images, ecfg.curve_steps, ecfg.pointing_tolerance,
            plan)
    if not plan.merges:  # this process wrote its shards; the merging one makes the figures and tables
        return plan.summary()
    metrics, claims, claim_shows = {}, [], []
    published = published_by_method(PUBLISHED)
    for name, (x, labels, boxes, classes) in sets.items():
        targets, (scores, seconds, shown, predicted) = scored[name]
        data = imagenet.name if name == "imagenet" else caltech.name  # each figure and row names its own images
        names = imagenet_classes()
        k = min(ecfg.figure_images, len(x), *(len(a) for a in shown.values()))  # Score-CAM may map fewer images
        captions = [f"{classes[labels[i]][:14]} -> {names[targets[i]].split(',')[0][:14]}" for i in range(k)]
        if not switches:  # the deconvnet's map ignores the image here: say so on the figure
            shown = {("deconvnet\n(fixed map:\nno switches)" if m == "deconvnet" else m): a for m, a in shown.items()}
        out.figure(method_grid(x[:k], shown, f"{cfg.model.name} layer {ecfg.layer}: maps of the top-1 class "
                               f"({name}{'; green: object box, red: 15% box' if boxes is not None else ''})",
                               captions, None if boxes is None else boxes[:k],
                               predicted if boxes is not None else None), f"{name}_grid",
                   shows=record.shown([cfg.model.name], {data: k}))
        curve_n = {m: int(np.isfinite(s["deletion_auc"]).sum()) for m, s in scores.items() if "deletion_auc" in s}
        curve_shows = record.shown([cfg.model.name], {data: max(curve_n.values(), default=0)})
        out.figure(curves_figure({m: s["curves"] for m, s in scores.items() if "curves" in s},
                                 f"{name}: deletion / insertion (RISE), {image_range(curve_n)} images"), f"{name}_curves",
                   shows=curve_shows)
        top1 = proportion(targets.numpy() == labels) if name == "imagenet" else None
        notes = metrics_notes(name, cfg.model.name, len(x), size, top1, curve_n, switches, ecfg.layer,
                              ecfg.layercam_layers, ecfg.methods, ecfg.scorecam_images, ecfg.curve_steps,
                              ecfg.pointing_tolerance)
        out.table(with_paper_numbers(metrics_table(scores, seconds, switches, boxes is not None), published),
                  f"{name}_metrics", title=f"CAM methods on {name} ({cfg.model.name}, {model.weights_source}, layer "
                  f"{ecfg.layer})", notes=notes)
        rows = paper_claims(scores, name, boxes is not None, COMPARISONS, PUBLISHED)
        claims, claim_shows = claims + rows, claim_shows + [record.shown([cfg.model.name], {data: len(x)})] * len(rows)
        metrics.update(summary_metrics(scores, name))
    if ecfg.control_images:
        claims = with_control(claims, control)
        metrics.update({f"control/{name}/seconds": s for name, s in control_seconds.items()})
    else:
        claims, control_seconds = with_control(claims, None, "not run (experiment.control_images = 0)"), {}
    out.claims(claims, "claims", shows=claim_shows,
               title="CAM family: the papers' comparisons, decided on paired differences",
               notes=claims_notes(cfg.model.name, cfg.seed, {name: len(x) for name, (x, *_) in sets.items()},
                                  ecfg.control_images, ecfg.control_scorecam_images, control_seconds))
    return metrics
