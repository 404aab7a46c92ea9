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

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from torch.nn import functional as F

from cnnvis.config import ExperimentConfig
from cnnvis.examples import pick_images
from cnnvis.from_config import images_or_samples_from_config, model_from_config
from cnnvis.models import CNN, DETECTOR, SEGMENTER, TRANSFORMER, build_model, frozen
from cnnvis.plotting.cam_beyond import MapColumn, model_grid
from cnnvis.task_gradcam import (TARGET_DEFINITIONS, ModelRun, map_caveats, models_table, random_weights,
                                 run_classifier, run_detector, run_segmenter, targets_table, weights_summary)

CLASSIFIERS = ("vit_b_16", "swin_t")
DETECTORS = ("fasterrcnn_mobilenet_v3_large_fpn",)
SEGMENTERS = ("deeplabv3_mobilenet_v3_large", "fcn_resnet50")
SMOKE_SIZE = 64  # smoke runs: 64 px images, two of them


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



def record_weights(record, name: str, model) -> None:
    """run.json's `weights` lists every model that ran, not only the configured one."""
    record.weights.append({"model": name, "weights": model.weights_source})



def built(record, name: str, size: int):
    model = frozen(build_model(name, input_size=size))
    record_weights(record, name, model)
    return model



def main(cfg, out, record):
    e = cfg.experiment
    check_experiment(e)
    images = images_or_samples_from_config(cfg, record)  # data first: a missing DATA_ROOT folder fails before any model is built
    picks = pick_images(images.labels, list(e.classes), min(e.images, 2) if cfg.smoke else e.images)
    size = SMOKE_SIZE if cfg.smoke else cfg.model.input_size
    cfg.model.input_size = size  # the model is built for the images it sees (AlexNet's and ZFNet's fc6 is sized by it)
    x = images.tensors(picks)
    if x.shape[-1] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False).clamp(0, 1)

    runs = [run_classifier(cfg.model.name, frozen(model_from_config(cfg, record)), x)]
    for name in e.classifiers:
        runs.append(run_classifier(name, built(record, name, size), x))
    if e.detector:
        runs.append(run_detector(e.detector, built(record, e.detector, size), x, e.detector_layer, e.detector_min_size))
    if e.segmenter:
        runs.append(run_segmenter(e.segmenter, built(record, e.segmenter, size), x))

    names = [c.split(",")[0] for c in images.classes]
    labels = [names[y] if y >= 0 else "-" for y in images.labels[picks]]
    files = [Path(images.paths[i]).name for i in picks]
    columns = [MapColumn(f"{r.name}\n({r.task})\n{r.weights}", r.maps,
                         [c + ("\nzero map" if float(m.max()) <= 0 else "") for c, m in zip(r.captions, r.maps)],
                         r.boxes, r.masks, random_weights(r.weights)) for r in runs]
    random_models = [r.name for r in runs if random_weights(r.weights)]
    honesty = (f"\nrandom weights (no cached pretrained weights): {', '.join(random_models)}: their maps show the "
               "method runs, not what a trained model attends to" if random_models else "")
    title = f"Grad-CAM beyond CNN classifiers on {images.name}\nweights: {weights_summary(runs)}{honesty}"
    out.figure(model_grid(x, columns, title, [f"{f}\n{label}" for f, label in zip(files, labels)]), "cam_beyond")
    out.table(models_table(runs), "notes", title="Grad-CAM beyond CNN classifiers: models, layers, targets, weights",
              notes=notes(runs, images.name, len(picks), size, list(e.classes)))
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


def notes(runs: list[ModelRun], images_name: str, n: int, size: int, classes: list[int]) -> str:
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
        *map_caveats(runs, n),
        "No claims table: no paper reports a number for these maps; the figure is the result.",
    ]
    return "\n\n".join(lines)
