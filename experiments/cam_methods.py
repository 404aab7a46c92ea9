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

import time
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import torch

from cnnvis.cams import ALL_METHODS
from cnnvis.claims import with_control
from cnnvis.config import DatasetConfig, ExperimentConfig, ResizeMode
from cnnvis.data import caltech101_boxes, decode_to_cache, imagenet_classes, index_caltech101
from cnnvis.deconvnet import has_switches
from cnnvis.from_config import images_from_config, model_from_config
from cnnvis.gap import feeds_gap_head
from cnnvis.localization import (METRICS, PROPORTIONS, Comparison, Published, estimate, faithfulness_claims,
                                 image_range, localization_claims, metrics_table, published_by_method, random_control,
                                 score_dataset, with_paper_numbers)
from cnnvis.models import CNN, TRANSFORMER, UnsupportedModelError, fold_batchnorm, frozen, resolve_layers
from cnnvis.plotting.cams import curves_figure, method_grid
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
# The papers' comparisons this run decides (cnnvis.localization: faithfulness_claims, localization_claims).
COMPARISONS = [
    Comparison("Chattopadhay et al. 2018", "Tab. 1", "gradcam++", ("gradcam",)),
    Comparison("Wang et al. 2020", "Tab. 1", "scorecam", ("gradcam", "gradcam++")),
]
LOCALIZATION = [
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
    published = published_by_method(PUBLISHED)
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
        out.table(with_paper_numbers(metrics_table(scores, seconds, switches, boxes is not None), published),
                  f"{name}_metrics", title=f"CAM methods on {name} ({cfg.model.name}, {model.weights_source}, layer "
                  f"{ecfg.layer})", notes=notes)
        claims += claims_of(scores, name, boxes is not None)
        for method, per_image in scores.items():
            for metric in METRICS:
                values = per_image.get(metric)
                if values is not None and np.isfinite(values).any():
                    e = estimate(metric, values)
                    metrics[f"{name}/{method}/{metric}"] = e.value * (100 if metric in PROPORTIONS else 1)
                    metrics[f"{name}/{method}/{metric}_n"] = e.n
    if ecfg.control_images:
        control, control_seconds = control_claims(cfg, sets, method_options)
        claims = with_control(claims, control)
        metrics.update({f"control/{name}/seconds": s for name, s in control_seconds.items()})
    else:
        claims, control_seconds = with_control(claims, None, "not run (experiment.control_images = 0)"), {}
    out.claims(claims, "claims", title="CAM family: the papers' comparisons, decided on paired differences",
               notes=claim_notes(cfg, {name: len(x) for name, (x, *_) in sets.items()}, control_seconds))
    return metrics


def claims_of(scores, dataset: str, boxed: bool) -> list:
    claims = faithfulness_claims(scores, dataset, COMPARISONS, PUBLISHED)
    return claims + (localization_claims(scores, LOCALIZATION, PUBLISHED, dataset) if boxed else [])


def control_claims(cfg, sets, method_options) -> tuple[list, dict]:
    """The same claims on the same architecture with random weights (seeded), from the methods the claims name, on
    the first ``control_images`` images of each set (Score-CAM on the first ``control_scorecam_images``); with the
    seconds each set took."""
    ecfg, m = cfg.experiment, cfg.model
    model = random_control(m.name, m.num_classes, m.input_size, cfg.seed)
    scorer = fold_batchnorm(model).to(memory_format=torch.channels_last)
    claimed = {name for c in COMPARISONS + LOCALIZATION for name in (c.method, *c.others)}
    methods = [name for name in ecfg.methods
               if name in claimed and (name != "scorecam" or ecfg.control_scorecam_images)]
    claims, seconds = [], {}
    for name, (x, _, boxes, _) in sets.items():
        start = time.perf_counter()
        k = min(ecfg.control_images, len(x))
        x, boxes = x[:k], None if boxes is None else boxes[:k]
        with torch.no_grad():
            targets = torch.cat([model(x[i:i + 32]) for i in range(0, k, 32)]).argmax(1)
        scores, *_ = score_dataset(model, scorer, x, targets, methods, method_options, ecfg.control_scorecam_images, 0,
                                   0, ecfg.curve_steps, ecfg.pointing_tolerance, boxes, f"control {name}")
        claims += claims_of(scores, name, boxes is not None)
        seconds[name] = time.perf_counter() - start
    return claims, seconds


def claim_notes(cfg, n_images: dict, control_seconds: dict) -> str:
    e = cfg.experiment
    control = (
        f"Random-weights control: {cfg.model.name} with random init (build_model(pretrained=False), torch seed "
        f"{cfg.seed}), the same claims on the first {', '.join(f'{min(e.control_images, n)} {name}' for name, n in n_images.items())} images, Score-CAM "
        f"on the first {e.control_scorecam_images} of each (its one forward pass per channel dominates the control's "
        "cost), every map of its own top-1 class "
        f"({', '.join(f'{s:.0f} s on {name}' for name, s in control_seconds.items())}). A claim the control "
        "also reproduces holds for random weights too (uninformative); its number and answer fill the control "
        "column. " if control_seconds else "No random-weights control (experiment.control_images = 0). ")
    return (
        "Each comparison is the mean over the same images of a per-image difference (Average Drop in %, Increase in "
        "Confidence as a 0/100 indicator, localization error as a 0/100 miss indicator), with a 95 % bootstrap "
        "interval over those images; n is the fewest images behind any difference in the row (Score-CAM's first "
        "images where Score-CAM takes part). A comparison is reproduced only when the method beats each other method "
        "AND every method in it beats the trivial baselines its table shows, each paired per image: the centre-point "
        "map for Average Drop and Increase in Confidence, the full-image and centre boxes for localization; "
        "contradicted when any difference lies on the wrong side of 0, inconclusive when any interval includes 0 "
        "(the reason names each difference and the smallest effect it could have detected). The paper's number "
        "quotes that paper's own table and row (Wang et al. 2020 print their own Grad-CAM and Grad-CAM++ numbers); "
        "the papers measured VGG-16 on ILSVRC images, ours is "
        f"{cfg.model.name} on the images of this run: the rules compare orderings, not values. " + control
        + "Old rules (before issue 23): the faithfulness comparisons were 'reproduced' when every paired difference "
        "between the methods lay on the paper's side of 0 and 'not reproduced' otherwise, with the centre-point map "
        "shown but not part of the rule; the localization claims were 'reproduced' when the paired error difference "
        "to the full-image and centre boxes lay below 0 for both and 'not reproduced' otherwise; the Score-CAM rows "
        "quoted Chattopadhay et al. 2018's Grad-CAM / Grad-CAM++ numbers instead of Wang et al. 2020's.")


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
