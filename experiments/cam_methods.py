"""The CAM / Grad-CAM family side by side (Grad-CAM Fig. 1, Score-CAM Fig. 1 layout) on EfficientNet-Lite0,
on ImageNet validation images and on the Caltech-101 images with object boxes, and scored as their papers
score them: localization error (CAM box rule at 15% / 20%), pointing game, Average Drop / Increase in
Confidence (Grad-CAM++) and deletion / insertion AUC (RISE).

Every map explains the model's top-1 class. Caltech-101 images go through the ImageNet model (its
1,000 classes do not include Caltech's), so localization there is class-agnostic: the box of the predicted
class's map against the object's box ("GT-known" localization).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from cnnvis import localization as loc
from cnnvis.cams import LayerCAM, as_map, make_method
from cnnvis.config import DatasetConfig, ExperimentConfig, ResizeMode
from cnnvis.data import caltech101_boxes, decode_to_cache, imagenet_classes, index_caltech101
from cnnvis.plotting.cams import curves_figure, method_grid
from cnnvis.runner import images_from_config, model_from_config

log = logging.getLogger(__name__)

ALL_METHODS = ["cam", "gradcam", "gradcam++", "scorecam", "layercam", "layercam_fused", "saliency", "deconvnet",
               "guided_backprop", "guided_gradcam"]

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
METRICS = ["loc_err_15", "loc_err_20", "pointing_game", "average_drop", "increase_in_confidence", "deletion_auc",
           "insertion_auc"]


@dataclass
class Config(ExperimentConfig):
    layer: str = "head"  # the last conv layer (feeds GAP + fc: CAM is exact there)
    layercam_layers: list[str] = field(default_factory=lambda: ["stage4", "stage6", "head"])  # fused LayerCAM
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


def caltech_with_boxes(cfg, n: int):
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
    images = decode_to_cache(index, cfg.model.input_size, "stretch", cfg.cache_dir, dcfg.num_workers)
    gt = np.stack([images.box_in_image(i, boxes[p]) for i, p in enumerate(images.paths)])
    return images, gt


def build_method(name, model, ecfg):
    if name == "layercam_fused":
        return LayerCAM(model, list(ecfg.layercam_layers), ecfg.batch_size)
    if name == "scorecam":
        return make_method(name, model, ecfg.layer, batch_size=ecfg.scorecam_batch_size)
    return make_method(name, model, ecfg.layer, batch_size=ecfg.batch_size)


def score_dataset(model, x, targets, methods, ecfg, boxes=None, desc=""):
    """Per method: attributions, maps and the metrics; Score-CAM on its first ``scorecam_images`` only."""
    rows, shown, curves, predicted_boxes = [], {}, {}, {}
    n_curve = min(ecfg.curve_images, len(x))
    for name in methods:
        n = min(ecfg.scorecam_images, len(x)) if name == "scorecam" else len(x)
        start = time.perf_counter()
        with build_method(name, model, ecfg) as method:
            attr = torch.cat([method.attribute(x[i:i + ecfg.batch_size], targets[i:i + ecfg.batch_size])
                              for i in tqdm(range(0, n, ecfg.batch_size), desc=f"{desc} {name}", leave=False)])
        seconds = (time.perf_counter() - start) / n
        maps = as_map(attr)
        shown[name] = attr[: ecfg.figure_images]
        row = {"method": name, "images": n, "seconds_per_image": seconds}
        if boxes is not None:
            for pct in (15, 20):
                found = [loc.box_from_map(m, pct / 100) for m in maps]
                row[f"loc_err_{pct}"] = 100 * (1 - np.mean([loc.iou(b, g) >= 0.5 for b, g in zip(found, boxes)]))
                if pct == 15:
                    predicted_boxes[name] = found[: ecfg.figure_images]
            row["pointing_game"] = 100 * np.mean([loc.pointing_hit(m, g, ecfg.pointing_tolerance) for m, g in zip(maps, boxes)])
        change = loc.confidence_change(model, x[:n], maps, targets[:n])
        row["average_drop"], row["increase_in_confidence"] = change["average_drop"], change["increase_in_confidence"]
        m = min(n, n_curve)
        per_mode = {}
        for mode in ("deletion", "insertion"):
            c = torch.stack([loc.causal_curve(model, x[i], maps[i], int(targets[i]), mode, ecfg.curve_steps)
                             for i in tqdm(range(m), desc=f"{desc} {name} {mode}", leave=False)])
            row[f"{mode}_auc"] = float(np.mean([loc.auc(ci) for ci in c]))
            per_mode[mode] = c.mean(0).numpy()
        curves[name] = per_mode
        row["curve_images"] = m
        rows.append(row)
        log.info("%s %s: %s", desc, name, {k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()})
    return pd.DataFrame(rows), shown, curves, predicted_boxes


def with_paper_numbers(df: pd.DataFrame) -> pd.DataFrame:
    """Our columns, then for each metric that a paper reports for the method: its number and source."""
    df = df.copy()
    papers = [(m, v) for m in METRICS for v in [df["method"].map(lambda name: PAPERS.get(name, {}).get(m))]
              if m in df.columns and v.notna().any()]
    for metric, values in papers:
        df[f"paper_{metric}"] = values.map(lambda t: t[0] if isinstance(t, tuple) else np.nan)
    df["paper_source"] = df["method"].map(
        lambda name: "; ".join(sorted({s for _, s in PAPERS.get(name, {}).values()})) or "")
    return df


def main(cfg, out):
    ecfg = cfg.experiment
    if cfg.smoke:  # seconds, not minutes: few curve points, one Score-CAM image, 64 px (each pass ~9x cheaper)
        ecfg.curve_images, ecfg.curve_steps, ecfg.scorecam_images = min(ecfg.curve_images, 2), 4, 1
        cfg.model.input_size = min(cfg.model.input_size, 64)
    unknown = sorted(set(ecfg.methods) - set(ALL_METHODS))
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; available: {', '.join(ALL_METHODS)}")
    imagenet = images_from_config(cfg)  # data first: a missing dataset fails before anything is written
    caltech, caltech_boxes = caltech_with_boxes(cfg, ecfg.caltech_images)
    model = model_from_config(cfg)
    for p in model.parameters():
        p.requires_grad_(False)
    size = cfg.model.input_size
    rng = np.random.default_rng(cfg.seed)
    pick = np.sort(rng.permutation(len(imagenet))[: ecfg.imagenet_images])
    sets = {"imagenet": (imagenet.tensors(pick, size), imagenet.labels[pick], None, imagenet.classes),
            "caltech101": (caltech.tensors(None, size), caltech.labels, caltech_boxes, caltech.classes)}
    metrics = {}
    for name, (x, labels, boxes, classes) in sets.items():
        with torch.no_grad():
            logits = torch.cat([model(x[i:i + 32]) for i in range(0, len(x), 32)])
        targets = logits.argmax(1)
        df, shown, curves, predicted = score_dataset(model, x, targets, list(ecfg.methods), ecfg, boxes, name)
        names = imagenet_classes()
        k = min(ecfg.figure_images, len(x))
        captions = [f"{classes[labels[i]][:14]} -> {names[targets[i]].split(',')[0][:14]}" for i in range(k)]
        out.figure(method_grid(x[:k], shown, f"{cfg.model.name} layer {ecfg.layer}: maps of the top-1 class "
                               f"({name}{'; green: object box, red: 15% box' if boxes is not None else ''})",
                               captions, None if boxes is None else boxes[:k],
                               predicted if boxes is not None else None), f"{name}_grid")
        out.figure(curves_figure(curves, f"{name}: deletion / insertion (RISE), {df['curve_images'].min()}-"
                                 f"{df['curve_images'].max()} images"), f"{name}_curves")
        top1 = float((targets.numpy() == labels).mean() * 100) if name == "imagenet" else None
        notes = notes_for(name, cfg, len(x), top1)
        out.table(with_paper_numbers(df), f"{name}_metrics", title=f"CAM methods on {name} ({cfg.model.name}, "
                  f"layer {ecfg.layer})", notes=notes)
        for _, row in df.iterrows():
            for metric in METRICS:
                if metric in row and pd.notna(row[metric]):
                    metrics[f"{name}/{row['method']}/{metric}"] = float(row[metric])
    return metrics


def notes_for(name, cfg, n, top1) -> str:
    e = cfg.experiment
    common = (
        f"{n} images at {cfg.model.input_size} px; every map explains the model's top-1 class. "
        + (f"Score-CAM (1,280 channels: 1,281 forward passes per image) is scored on its first {e.scorecam_images} "
           "images only. " if "scorecam" in e.methods else
           "Score-CAM is not in this run (1,281 forward passes per image at this layer: minutes per image on a "
           "shared CPU; its maps equal pytorch-grad-cam's, see tests/test_cams.py). ")
        + f"Deletion / insertion on the first {e.curve_images} images ({e.curve_steps} steps; deletion sets "
        "pixels to 0, insertion starts from an 11-px sigma-5 Gaussian blur, as RISE). Average Drop / Increase in "
        "Confidence use softmax probabilities on the image times its min-max-scaled map (Grad-CAM++ definitions). "
        "Input-space methods (saliency, deconvnet, guided backprop, guided Grad-CAM) are reduced to a map by max_c |.| "
        "(Simonyan). layercam is LayerCAM at the last layer alone; layercam_fused fuses "
        f"{', '.join(e.layercam_layers)} as its paper. The papers' numbers are for other networks (VGG-16, "
        "ResNet-50) on other ILSVRC images: compare orderings, not values."
    )
    if name == "imagenet":
        return (f"ImageNet validation subset (no boxes: no localization columns). The model's top-1 accuracy on "
                f"these images: {top1:.1f}%. " + common)
    return ("Caltech-101 images with object boxes (24 categories, round-robin). The model is ImageNet-trained, "
            "so localization is class-agnostic (GT-known): error = % of images whose map's box (largest component "
            "above 15% / 20% of the maximum) has IoU < 0.5 with the object's box; the papers' top-1 error also counts "
            "wrong classes. Pointing game: the map's maximum within "
            f"{e.pointing_tolerance:g} px of the box (Zhang et al. 2016). " + common)
