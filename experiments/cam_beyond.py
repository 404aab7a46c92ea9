"""Grad-CAM beyond convolutional classifiers: the same images through a vision transformer (ViT-B/16), a
shifted-window transformer (Swin-T), a detector (Faster R-CNN, MobileNetV3-FPN) and a segmenter (DeepLabV3,
MobileNetV3), beside the configured classifier (EfficientNet-Lite0, ImageNet-trained) as the reference column.

Each model's Grad-CAM explains a stated target (``cnnvis.targets``): a classifier's top-1 class score, the
detector's highest-scoring detection (pytorch-grad-cam's box score), the segmenter's region of its dominant
non-background class. A transformer's token layer is reshaped into a (C, h, w) grid by the model's
``cam_reshape``. Whatever weights are cached run; without them a model runs with random weights, and the titles,
the notes and run.json say so: such a map shows that the method runs on the architecture and target, not what a
trained model attends to. No claims table: no paper gives a number for these maps.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd
import torch
import torchvision
from torch import nn
from torch.nn import functional as F
from torchvision.models.detection.generalized_rcnn import GeneralizedRCNN

from cnnvis import runner
from cnnvis.cams import GradCAM
from cnnvis.config import ExperimentConfig
from cnnvis.data import imagenet_classes
from cnnvis.models import (CNN, DETECTOR, DRAWN_HEAD, RANDOM_INIT, SEGMENTER, TRANSFORMER, build_model, frozen,
                           resolve_layers)
from cnnvis.plotting.cam_beyond import MapColumn, model_grid
from cnnvis.runner import model_from_config
from cnnvis.targets import ClassScore, DetectionBox, SegmentationRegion
from experiments.zfnet_occlusion import load_examples

log = logging.getLogger(__name__)

CLASSIFIERS = ("vit_b_16", "swin_t")
DETECTORS = ("fasterrcnn_mobilenet_v3_large_fpn",)
SEGMENTERS = ("deeplabv3_mobilenet_v3_large", "fcn_resnet50")
SMOKE_SIZE = 64  # smoke runs: 64 px images, two of them
BACKGROUND = 0  # VOC's class 0, the segmenters' background
NO_RESHAPE = "none: the layer's output is (N, C, h, w) already"

TARGET_DEFINITIONS = {
    "classification": ("top-1 class score", "y = z_c(x), the pre-softmax score of the model's top-1 class "
                       "c = argmax_k z_k(x) (ClassScore(c))"),
    "detection": ("top detection's box score",
                  "y = IoU(b, d) + s(d) for the reference box b with label l, where d is the detection with the "
                  "largest IoU with b, counted only when IoU > 0.5 and label(d) = l, else y = 0 (pytorch-grad-cam's "
                  "FasterRCNNBoxScoreTarget; DetectionBox([l], [b])); b, l: the model's own highest-scoring "
                  "detection, so d = b and y = 1 + s(b)"),
    "segmentation": ("dominant class region",
                     "y = sum over (i, j) in M of z_c(i, j), the pre-softmax score of class c summed over the "
                     "region M = {(i, j): argmax_k z_k(i, j) = c}, c the non-background class predicted on the most "
                     "pixels (background when no pixel has another class) (SegmentationRegion(c, M))"),
}


MODEL_KINDS = [CNN, TRANSFORMER]  # the networks it runs (cnnvis.config.check_model_kind)
OTHER_MODEL_KEYS = {DETECTOR: "detector", SEGMENTER: "segmenter"}  # experiment keys for the other kinds


@dataclass
class Config(ExperimentConfig):
    # one image of each, in this order (then the dataset's first other images up to `images`): ImageNet classes
    # whose object COCO (the detector) and VOC (the segmenter) name too: Pomeranian (dog), tabby (cat),
    # sports car (car), tandem bicycle (bicycle, person), sorrel (horse), school bus (bus)
    classes: list[int] = field(default_factory=lambda: [259, 281, 817, 444, 339, 779])
    images: int = 6
    classifiers: list[str] = field(default_factory=lambda: list(CLASSIFIERS))  # beside the configured model
    detector: Optional[str] = "fasterrcnn_mobilenet_v3_large_fpn"  # null: no detector column
    segmenter: Optional[str] = "deeplabv3_mobilenet_v3_large"  # null: no segmenter column
    # the detector's Grad-CAM layer: the FPN level its box head pools every box from (a tensor; the model's
    # last_conv role, the FPN dict, serves gradient-free methods only); body_out: the MobileNet's last stage
    detector_layer: Optional[str] = "fpn_level0"
    detector_min_size: Optional[int] = None  # the detector resizes images to this shorter side; null: its own
    # (the image size: not rescaled; torchvision's pretrained recipe uses 800 for small objects)


@dataclass
class ModelRun:
    """What one model computed on the images, for the figure and the tables."""

    name: str
    task: str
    weights: str
    layer: str
    reshape: str
    maps: torch.Tensor  # (N, H, W) Grad-CAM at the input size
    captions: list[str]  # per image: the target the map explains
    scores: list[float]  # per image: the target's value y (NaN where the model had no target)
    seconds: float  # per image, Grad-CAM alone
    boxes: Optional[list] = None
    masks: Optional[list] = None
    notes: list[str] = field(default_factory=list)


def check_experiment(e) -> None:
    """Unknown model names and an empty image count fail before any image or weight is loaded, naming the key."""
    if e.images < 1:
        raise ValueError(f"experiment.images={e.images}: set it to the number of images to draw (>= 1)")
    for key, chosen, known in (("experiment.classifiers", list(e.classifiers), CLASSIFIERS),
                               ("experiment.detector", [e.detector] if e.detector else [], DETECTORS),
                               ("experiment.segmenter", [e.segmenter] if e.segmenter else [], SEGMENTERS)):
        unknown = [name for name in chosen if name not in known]
        if unknown:
            raise ValueError(f"unknown model(s) {unknown} in {key}; available: {', '.join(known)}")


def pick_images(labels: np.ndarray, classes: list[int], n: int) -> list[int]:
    """The first image of each wanted class (in the order given), then the dataset's other images in order, n in
    all (an unlabelled folder gives its first n)."""
    wanted = [int(np.flatnonzero(labels == c)[0]) for c in classes if (labels == c).any()]
    others = [i for i in range(len(labels)) if i not in wanted]
    return (wanted + others)[:n]


def category_names(name: str, k: int) -> list[str]:
    """Names of a k-way output: ImageNet's for 1,000 classes, else the categories of the model's torchvision
    weights (their metadata ships with torchvision: no download), else 'class i'."""
    if k == 1000:
        return [c.split(",")[0] for c in imagenet_classes()]
    try:
        for weights in torchvision.models.get_model_weights(name):
            categories = weights.meta.get("categories")
            if categories and len(categories) == k:
                return list(categories)
    except ValueError:  # not a torchvision builder
        pass
    return [f"class {i}" for i in range(k)]


def reshape_name(model) -> str:
    """How the CAM layer's output becomes (N, C, h, w) maps: the model's cam_reshape, described by its docstring."""
    reshape = getattr(model, "cam_reshape", None)
    if reshape is None:
        return NO_RESHAPE
    doc = (getattr(reshape, "__doc__", None) or "").strip().splitlines()
    name = getattr(reshape, "__name__", type(reshape).__name__)
    return f"{name}: {doc[0]}" if doc else name


def random_weights(weights: str) -> bool:
    """Whether a model's ``weights_source`` is random init (with or without a drawn head)."""
    return weights.startswith(RANDOM_INIT)


def record_weights(name: str, model) -> None:
    """run.json's `weights` lists every model that ran, not only the configured one."""
    runner.loaded_weights.append({"model": name, "weights": model.weights_source})


def gradcam_maps(model, layer: str, x: torch.Tensor, targets: list, reshape=None) -> tuple[torch.Tensor, float]:
    """Grad-CAM of each image's own target (None: no target, a zero map), one image per call, the layer's output
    reshaped by ``reshape`` (None: the model's cam_reshape); seconds per image."""
    maps = torch.zeros(x.shape[0], *x.shape[-2:])
    start = time.perf_counter()
    with GradCAM(model, layer, batch_size=1, reshape=reshape) as cam:
        for i, target in enumerate(targets):
            if target is not None:
                maps[i] = cam.attribute(x[i:i + 1], target)[0]
    return maps, (time.perf_counter() - start) / len(x)


def run_classifier(name: str, model, x: torch.Tensor) -> ModelRun:
    """Grad-CAM of each image's top-1 class score at the model's last_conv layer."""
    layer = resolve_layers(model, None, "last_conv", "experiment.classifiers")
    notes = []
    if model.weights_source == DRAWN_HEAD:
        notes.append(f"{name}'s random head: torchvision initializes it to zeros (every logit and every gradient "
                     f"0: a zero map); build_model draws it instead ({model.weights_source}), so the map shows the "
                     "method's path through the tokens.")
    with torch.no_grad():
        logits = model(x)
    top1 = logits.argmax(1)
    names = category_names(name, logits.shape[1])
    maps, seconds = gradcam_maps(model, layer, x, [ClassScore(int(c)) for c in top1])
    return ModelRun(name, "classification", model.weights_source, layer, reshape_name(model), maps,
                    [f"top-1: {names[c][:20]} ({p:.1%})" for c, p in zip(top1.tolist(),
                                                                       logits.softmax(1).amax(1).tolist())],
                    logits.gather(1, top1[:, None])[:, 0].tolist(), seconds, notes=notes)


def detection_core(model) -> GeneralizedRCNN:
    """The torchvision detector inside ``model`` (its resize transform and its box score threshold live there)."""
    return next(m for m in model.modules() if isinstance(m, GeneralizedRCNN))


def run_detector(name: str, model, x: torch.Tensor, layer: Optional[str], min_size: Optional[int]) -> ModelRun:
    """Grad-CAM of each image's highest-scoring detection (its box drawn); a random detector's scores sit near
    chance (1 / 91), under torchvision's 0.05 threshold, so it is kept at 0 there to give the model a top box."""
    core, notes = detection_core(model), []
    if min_size is not None:
        core.transform.min_size, core.transform.max_size = (min_size,), max(core.transform.max_size, min_size)
    notes.append(f"{name} resizes each {x.shape[-1]} px image to a shorter side of {core.transform.min_size[0]} px "
                 "before its backbone (its own transform; `experiment.detector_min_size` sets it); boxes are mapped "
                 "back to the image and the map is upsampled to it.")
    if random_weights(model.weights_source):
        notes.append(f"{name} ran with random weights: its box score threshold was set from "
                     f"{core.roi_heads.score_thresh:g} to 0 so that it returns boxes at all, and the target is the top "
                     "box of a random model (a box that says nothing about the object).")
        core.roi_heads.score_thresh = 0.0
    layer = resolve_layers(model, layer, "last_conv", "experiment.detector_layer")
    with torch.no_grad():
        detections = model(x)
    names = category_names(name, core.roi_heads.box_predictor.cls_score.out_features)
    targets, boxes, captions, scores = [], [], [], []
    for d in detections:
        if len(d["scores"]) == 0:
            targets.append(None)
            boxes.append(None)
            captions.append("no detection")
            scores.append(float("nan"))
            continue
        top = int(d["scores"].argmax())
        label, box, score = int(d["labels"][top]), d["boxes"][top], float(d["scores"][top])
        targets.append(DetectionBox([label], box[None]))
        boxes.append(box.tolist())
        captions.append(f"top box: {names[label][:16]} ({score:.2f})")
        scores.append(1.0 + score)  # the target's value on its own detection: IoU 1 + score
    # a conv layer's output is a map already; the model's cam_reshape is for its backbone's dict of FPN levels
    maps, seconds = gradcam_maps(model, layer, x, targets, reshape=nn.Identity())
    return ModelRun(name, "detection", model.weights_source, layer, NO_RESHAPE, maps, captions, scores,
                    seconds, boxes=boxes, notes=notes)


def dominant_class(predicted: torch.Tensor, k: int) -> int:
    """The non-background class on most pixels of an (H, W) map of predicted classes (the lowest index on a tie);
    background when no pixel has another class."""
    counts = torch.bincount(predicted.flatten(), minlength=k)
    counts[BACKGROUND] = 0
    return int(counts.argmax()) if counts.any() else BACKGROUND


def run_segmenter(name: str, model, x: torch.Tensor) -> ModelRun:
    """Grad-CAM of each image's dominant non-background class, summed over the pixels predicted as it (outlined)."""
    layer = resolve_layers(model, None, "last_conv", "experiment.segmenter")
    with torch.no_grad():
        logits = model(x)  # (N, K, H, W)
    names = category_names(name, logits.shape[1])
    predicted = logits.argmax(1)
    targets, masks, captions, scores = [], [], [], []
    for i in range(len(x)):
        category = dominant_class(predicted[i], logits.shape[1])
        mask = predicted[i] == category
        targets.append(SegmentationRegion(category, mask.float()))
        masks.append(mask)
        captions.append(f"region: {names[category][:16]} ({float(mask.float().mean()):.0%} of pixels)")
        scores.append(float(logits[i, category][mask].sum()))
    maps, seconds = gradcam_maps(model, layer, x, targets)
    return ModelRun(name, "segmentation", model.weights_source, layer, reshape_name(model), maps, captions, scores,
                    seconds, masks=masks)


def built(name: str, size: int):
    model = frozen(build_model(name, input_size=size))
    record_weights(name, model)
    return model


def models_table(runs: list[ModelRun]) -> pd.DataFrame:
    return pd.DataFrame([{"model": r.name, "task": r.task, "weights": r.weights, "layer": r.layer,
                          "reshape": r.reshape, "target": TARGET_DEFINITIONS[r.task][0],
                          "definition": TARGET_DEFINITIONS[r.task][1],
                          "zero maps": f"{sum(float(m.max()) <= 0 for m in r.maps)} of {len(r.maps)}",
                          "median map max": float(r.maps.flatten(1).amax(1).median()),
                          "gradcam_seconds_per_image": round(r.seconds, 3)} for r in runs])


def targets_table(runs: list[ModelRun], files: list[str], labels: list[str]) -> pd.DataFrame:
    rows = []
    for r in runs:
        for i, (file, label) in enumerate(zip(files, labels)):
            rows.append({"image": file, "label": label, "model": r.name, "weights": r.weights,
                         "target": r.captions[i], "target_value": round(r.scores[i], 4),
                         "map_max": float(r.maps[i].max()), "zero_map": bool(float(r.maps[i].max()) <= 0)})
    return pd.DataFrame(rows)


def weights_summary(runs: list[ModelRun]) -> str:
    """'random init: vit_b_16, swin_t; ImageNet weights (...): efficientnet_lite0'."""
    by_weights: dict[str, list[str]] = {}
    for r in runs:
        by_weights.setdefault(r.weights, []).append(r.name)
    return "; ".join(f"{weights}: {', '.join(names)}" for weights, names in by_weights.items())


def notes_for(runs: list[ModelRun], images_name: str, n: int, size: int, classes: list[int]) -> str:
    random_models = [r.name for r in runs if random_weights(r.weights)]
    trained = [r.name for r in runs if not random_weights(r.weights)]
    zero = {r.name: sum(float(m.max()) <= 0 for m in r.maps) for r in runs}
    lines = [
        f"{n} images of {images_name} at {size} px (the first image of each of the ImageNet classes "
        f"{', '.join(map(str, classes))} present, then the dataset's first other images); every model sees the same "
        "tensors in [0, 1] (each normalizes them itself).",
        "Grad-CAM (Selvaraju et al. 2017) for every model: L = ReLU(sum_k alpha_k A_k), alpha_k = mean_ij dy/dA_k(i, j), "
        "A the (C, h, w) activation of the model's `layer` after its `reshape`, y the target below; the map is "
        "upsampled (bilinear) to the image and min-max scaled in the figure.",
        "Targets: " + " ".join(f"{task}: {definition}." for task, (_, definition) in TARGET_DEFINITIONS.items()
                               if any(r.task == task for r in runs)),
        "Layers and reshapes: " + "; ".join(f"{r.name}: `{r.layer}`, {r.reshape}" for r in runs) + ".",
        f"Weights: {weights_summary(runs)}.",
    ]
    if random_models:
        lines.append(
            f"{', '.join(random_models)} ran with random weights (random init: no pretrained weights for "
            "them in the torch hub cache, TORCH_HOME). Their maps show that Grad-CAM runs end to end on these "
            "architectures, layers and targets, not what a trained model attends to; their targets are a random "
            "model's top class / top box / dominant region. With the weights cached (or a network connection), the "
            "same command uses them, and the titles and run.json say which ran."
            + (f" Trained weights ran for: {', '.join(trained)}." if trained else ""))
    lines.append("The figure min-max scales each map, which makes even a map of rounding-level values look "
                 "structured; the maps' median maxima: "
                 + ", ".join(f"{r.name} {float(r.maps.flatten(1).amax(1).median()):.2g}" for r in runs) + ".")
    if any(zero.values()):
        lines.append("Zero maps (ReLU of a map with no positive part, or a target with no detection): "
                     + ", ".join(f"{name} {k} of {n}" for name, k in zero.items() if k) + ".")
    for r in runs:
        lines += r.notes
    lines.append("No claims table: no paper reports a number for these maps; the figure is the result.")
    return "\n\n".join(lines)


def main(cfg, out):
    e = cfg.experiment
    check_experiment(e)
    images = load_examples(cfg)  # data first: a missing DATA_ROOT folder fails before any model is built
    picks = pick_images(images.labels, list(e.classes), min(e.images, 2) if cfg.smoke else e.images)
    size = SMOKE_SIZE if cfg.smoke else cfg.model.input_size
    cfg.model.input_size = size  # the model is built for the images it sees (AlexNet's and ZFNet's fc6 is sized by it)
    x = images.tensors(picks)
    if x.shape[-1] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False).clamp(0, 1)

    runs = [run_classifier(cfg.model.name, frozen(model_from_config(cfg)), x)]
    for name in e.classifiers:
        runs.append(run_classifier(name, built(name, size), x))
    if e.detector:
        runs.append(run_detector(e.detector, built(e.detector, size), x, e.detector_layer, e.detector_min_size))
    if e.segmenter:
        runs.append(run_segmenter(e.segmenter, built(e.segmenter, size), x))

    names = [c.split(",")[0] for c in images.classes]
    labels = [names[y] if y >= 0 else "-" for y in images.labels[picks]]
    files = [Path(images.paths[i]).name for i in picks]
    columns = [MapColumn(f"{r.name}\n({r.task})\n{r.weights}", r.maps,
                         [c + ("\nzero map" if float(m.max()) <= 0 else "") for c, m in zip(r.captions, r.maps)],
                         r.boxes, r.masks) for r in runs]
    random_models = [r.name for r in runs if random_weights(r.weights)]
    honesty = (f"\nrandom weights (no cached pretrained weights): {', '.join(random_models)}: their maps show the "
               "method runs, not what a trained model attends to" if random_models else "")
    title = f"Grad-CAM beyond CNN classifiers on {images.name}\nweights: {weights_summary(runs)}{honesty}"
    out.figure(model_grid(x, columns, title, [f"{f}\n{label}" for f, label in zip(files, labels)]), "cam_beyond")
    notes = notes_for(runs, images.name, len(picks), size, list(e.classes))
    out.table(models_table(runs), "notes", title="Grad-CAM beyond CNN classifiers: models, layers, targets, weights",
              notes=notes)
    out.table(targets_table(runs, files, labels), "targets",
              title="The target each map explains, per image and model",
              notes="target_value: the target's y on the unmodified image (detection: 1 + the box's score). "
                    "zero_map: the Grad-CAM is 0 everywhere. Weights: " + weights_summary(runs) + ".")
    metrics = {"images": len(picks), "size": size}
    for r in runs:
        metrics[f"{r.name}/zero_maps"] = sum(float(m.max()) <= 0 for m in r.maps)
        metrics[f"{r.name}/gradcam_seconds_per_image"] = r.seconds
        metrics[f"{r.name}/random_weights"] = random_weights(r.weights)
    return metrics
