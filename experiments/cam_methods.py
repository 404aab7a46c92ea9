"""The CAM / Grad-CAM family side by side (Grad-CAM Fig. 1, Score-CAM Fig. 1 layout) on EfficientNet-Lite0,
on ImageNet validation images and on the Caltech-101 images with object boxes, and scored as their papers
score them: localization error (CAM box rule at 15% / 20%), pointing game, Average Drop / Increase in
Confidence (Grad-CAM++) and deletion / insertion AUC (RISE).

Every map explains the model's top-1 class. Caltech-101 images go through the ImageNet model (its
1,000 classes do not include Caltech's), so localization there is class-agnostic: the box of the predicted
class's map against the object's box ("GT-known" localization).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import torch

from cnnvis.cams import ALL_METHODS
from cnnvis.claims import claims_frame
from cnnvis.config import DatasetConfig, ExperimentConfig, ResizeMode
from cnnvis.data import caltech101_boxes, decode_to_cache, imagenet_classes, index_caltech101
from cnnvis.deconvnet import has_switches
from cnnvis.from_config import images_from_config, model_from_config
from cnnvis.gap import feeds_gap_head
from cnnvis.localization import (METRICS, PROPORTIONS, estimate, faithfulness_claims, image_range, localization_claims,
                                 metrics_table, score_dataset, with_paper_numbers)
from cnnvis.models import CNN, TRANSFORMER, UnsupportedModelError, fold_batchnorm, frozen, resolve_layers
from cnnvis.plotting.cams import curves_figure, method_grid
from cnnvis.stats import proportion

# Published numbers (other networks, other images): method -> {metric: (value, source)}.
PAPERS = {
    "cam": {"loc_err_20": (57.20, "Zhou 2016 Tab. 2, VGGnet-GAP, ILSVRC val top-1")},
    "gradcam": {"loc_err_15": (56.51, "Selvaraju 2017 Tab. 1, VGG-16, ILSVRC-15 val top-1"),
                "average_drop": (46.56, "Chattopadhay 2018 Tab. 1, VGG-16"),
                "increase_in_confidence": (13.42, "Chattopadhay 2018 Tab. 1, VGG-16"),
                "deletion_auc": (0.1232, "Petsiuk 2018 Tab. 2, ResNet-50"),
                "insertion_auc": (0.6766, "Petsiuk 2018 Tab. 2, ResNet-50")},
    "gradcam++": {"average_drop": (36.84, "Chattopadhay 2018 Tab. 1, VGG-16"),
                  "increase_in_confidence": (17.05, "Chattopadhay 2018 Tab. 1, VGG-16")},
    "scorecam": {"average_drop": (31.5, "Wang 2020 Tab. 1, VGG-16"),
                 "increase_in_confidence": (30.6, "Wang 2020 Tab. 1, VGG-16")},
}


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
        cfg.model.input_size = min(cfg.model.input_size, 64)
    unknown = sorted(set(ecfg.methods) - set(ALL_METHODS))
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; available: {', '.join(ALL_METHODS)}")
    imagenet = images_from_config(cfg, record)  # data first: a missing dataset fails before anything is written
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
    metrics, claims = {}, []
    for name, (x, labels, boxes, classes) in sets.items():
        with torch.no_grad():
            logits = torch.cat([model(x[i:i + 32]) for i in range(0, len(x), 32)])
        targets = logits.argmax(1)
        scores, seconds, shown, predicted = score_dataset(
            model, scorer, x, targets, list(ecfg.methods), method_options, ecfg.scorecam_images, ecfg.figure_images,
            ecfg.curve_images, ecfg.curve_steps, ecfg.pointing_tolerance, boxes, name)
        names = imagenet_classes()
        k = min(ecfg.figure_images, len(x), *(len(a) for a in shown.values()))  # Score-CAM may map fewer images
        captions = [f"{classes[labels[i]][:14]} -> {names[targets[i]].split(',')[0][:14]}" for i in range(k)]
        if not switches:  # the deconvnet's map ignores the image here: say so on the figure
            shown = {("deconvnet\n(fixed map:\nno switches)" if m == "deconvnet" else m): a for m, a in shown.items()}
        out.figure(method_grid(x[:k], shown, f"{cfg.model.name} layer {ecfg.layer}: maps of the top-1 class "
                               f"({name}{'; green: object box, red: 15% box' if boxes is not None else ''})",
                               captions, None if boxes is None else boxes[:k],
                               predicted if boxes is not None else None), f"{name}_grid")
        curve_n = {m: int(np.isfinite(s["deletion_auc"]).sum()) for m, s in scores.items() if "deletion_auc" in s}
        out.figure(curves_figure({m: s["curves"] for m, s in scores.items() if "curves" in s},
                                 f"{name}: deletion / insertion (RISE), {image_range(curve_n)} images"), f"{name}_curves")
        top1 = proportion(targets.numpy() == labels) if name == "imagenet" else None
        notes = notes_for(name, cfg, len(x), top1, curve_n, switches)
        out.table(with_paper_numbers(metrics_table(scores, seconds, switches, boxes is not None), PAPERS), f"{name}_metrics",
                  title=f"CAM methods on {name} ({cfg.model.name}, {model.weights_source}, layer {ecfg.layer})", notes=notes)
        claims += faithfulness_claims(scores, name, PAPERS)
        if boxes is not None:
            claims += localization_claims(scores, PAPERS)
        for method, per_image in scores.items():
            for metric in METRICS:
                values = per_image.get(metric)
                if values is not None and np.isfinite(values).any():
                    e = estimate(metric, values)
                    metrics[f"{name}/{method}/{metric}"] = e.value * (100 if metric in PROPORTIONS else 1)
                    metrics[f"{name}/{method}/{metric}_n"] = e.n
    out.table(claims_frame(claims), "claims", title="CAM family: the papers' comparisons, decided on paired differences",
              notes=CLAIM_NOTES)
    return metrics


CLAIM_NOTES = """
Each comparison is the mean over the same images of a per-image difference (Average Drop in %, Increase in
Confidence as a 0/1 indicator in %, localization error as a 0/1 miss indicator in %), with a 95 % bootstrap
interval over those images; n is the number of images every method in the row was scored on (Score-CAM's
first images where Score-CAM takes part). The papers' numbers are on VGG-16 over ILSVRC images; ours are
EfficientNet-Lite0 on the images of this run: the rule compares orderings, not values. The baseline column is
the strongest trivial baseline scored by the same rule on the same images.
"""


def notes_for(name, cfg, n, top1, curve_n, switches) -> str:
    e = cfg.experiment
    scorecam_n = min(e.scorecam_images, n)
    common = (
        f"{n} images at {cfg.model.input_size} px; every map explains the model's top-1 class. Each cell: mean "
        "[95 % interval] (n = images scored): Wilson intervals for shares (localization error, pointing game, "
        "Increase in Confidence), bootstrap over images for means (Average Drop, deletion / insertion AUC). "
        + (f"Score-CAM (one forward pass per channel of {e.layer} per image) is scored on its first {scorecam_n} "
           "images. " if "scorecam" in e.methods else
           "Score-CAM is not in this run (one forward pass per channel per image; its maps equal pytorch-grad-cam's, "
           "see tests/test_cams.py). ")
        + f"Deletion / insertion on the first {image_range(curve_n)} images "
        f"({e.curve_steps} steps; deletion sets pixels to 0, insertion starts from an 11-px sigma-5 Gaussian blur, "
        "as RISE). Average Drop / Increase in Confidence use softmax probabilities on the image times its "
        "min-max-scaled map (Grad-CAM++ definitions). Input-space methods (saliency, deconvnet, guided backprop, "
        "guided Grad-CAM) are reduced to a map by max_c |.| (Simonyan). "
        + ("" if switches else
           f"{cfg.model.name} has no max-pooling, so the deconvnet's backward pass ignores the image (its rule "
           "rectifies the signal whatever the forward pass did, everything else is linear): its map is one fixed "
           "map per class (Mahendran & Vedaldi 2016), a baseline rather than an explanation; guided backprop "
           "(Springenberg et al. 2015) is the image-dependent variant. ")
        + f"layercam is LayerCAM at the last layer alone; layercam_fused fuses {', '.join(e.layercam_layers)} as "
        "its paper. Baseline row 'centre point': a map that is highest at the image centre and falls off with the "
        "distance from it, scored by every rule (pointing game: the centre point). The papers' numbers are for "
        "other networks (VGG-16, ResNet-50) on other ILSVRC images: compare orderings, not values."
    )
    if name == "imagenet":
        return (f"ImageNet validation subset (no boxes: no localization columns). The model's top-1 accuracy on "
                f"these images: {top1.format(1, 100)}. " + common)
    return ("Caltech-101 images with object boxes (24 categories, round-robin). The model is ImageNet-trained, "
            "so localization is class-agnostic (GT-known): error = % of images whose map's box (largest component "
            "above 15% / 20% of the maximum) has IoU < 0.5 with the object's box; the papers' top-1 error also counts "
            "wrong classes. Pointing game: the map's maximum within "
            f"{e.pointing_tolerance:g} px of the box (Zhang et al. 2016). Localization on the input-space maps is "
            "marked not comparable: the papers boxed those maps after a segmentation step (Simonyan et al. 2013: "
            "GraphCut), not with the raw threshold on a speckled map. Trivial baselines: 'full image' boxes the "
            "whole image; 'centre box' is a centred box whose width and height are the mean over the other images' "
            "object boxes of this run (leave-one-out, so an image's own box never informs its baseline). " + common)
