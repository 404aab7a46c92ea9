"""Grad-CAM of each kind of model on its own target (``cnnvis.targets``): a classifier's top-1 class score, a
detector's highest-scoring detection (pytorch-grad-cam's box score), a segmenter's region of its dominant
non-background class; what each computed per image (``ModelRun``), its tables, and the caveats a reader needs
(random weights, rounding-level and zero maps)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Optional

import pandas as pd
import torch
import torchvision
from torch import nn
from torchvision.models.detection.generalized_rcnn import GeneralizedRCNN

from cnnvis.cams import GradCAM
from cnnvis.data import imagenet_classes
from cnnvis.models import DRAWN_HEAD, RANDOM_INIT, resolve_layers
from cnnvis.targets import ClassScore, DetectionBox, SegmentationRegion

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


def map_caveats(runs: list[ModelRun], n: int) -> list[str]:
    """What a reader must know before reading the maps of ``n`` images: which models ran with random weights, the
    maps' scale, the zero maps, and each model's own notes."""
    random_models = [r.name for r in runs if random_weights(r.weights)]
    trained = [r.name for r in runs if not random_weights(r.weights)]
    zero = {r.name: sum(float(m.max()) <= 0 for m in r.maps) for r in runs}
    lines = []
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
    return lines
