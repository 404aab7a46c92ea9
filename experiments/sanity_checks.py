"""Sanity checks for saliency maps (Adebayo et al. 2018), for every method of `cam_methods`, on two networks:
EfficientNet-Lite0 (ImageNet weights, ImageNet validation images) and the ZFNet trained by `train` (its CPU
preset, on its Caltech-101 validation images).

Cascading model-parameter randomization (Fig. 2 / Fig. 4): layers re-initialized from the logits down,
cumulatively, and each step's map compared with the trained model's map of the same image and class (the trained
model's top-1) by Spearman rank correlation (absolute and signed), SSIM and HOG similarity (cnnvis.sanity).
Data randomization (Sec. 5): the same ZFNet recipe trained on permuted labels, its maps compared with the
true-label model's.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from omegaconf import OmegaConf

from cnnvis.ablations import build_model_at_width
from cnnvis.cams import ALL_METHODS
from cnnvis.claims import claims_frame
from cnnvis.config import DatasetConfig, ExperimentConfig, ModelConfig, ResizeMode
from cnnvis.from_config import images_from_config, model_from_config, train_val_sets, train_variant
from cnnvis.models import CNN, frozen, resolve_layers
from cnnvis.plotting.sanity import cascade_grid, similarity_curves
from cnnvis.sanity import (MEASURE_NAMES, MEASURES, cascade, cascade_blocks, cascade_claims, cascade_table,
                           data_randomization_table, rule_text, trained_maps)
from cnnvis.stats import proportion
from cnnvis.training import ShuffledLabels, TrainConfig, smoke_recipe

TRAIN_COMMAND = "python run.py experiment=train"


MODEL_KINDS = [CNN]  # the networks it runs (cnnvis.config.check_model_kind)


@dataclass
class Config(ExperimentConfig):
    methods: list[str] = field(default_factory=lambda: list(ALL_METHODS))
    pretrained_model: str = "efficientnet_lite0"  # ImageNet weights available offline
    pretrained_images: int = 32  # ImageNet validation images (seeded pick)
    trained_images: int = 64  # the trained ZFNet's Caltech-101 validation images (seeded pick)
    # Score-CAM (one forward pass per channel of the last conv layer, per image and cascade step) on the first
    # images only; 0 leaves it out. EfficientNet-Lite0's 1,280 channels: ~22 s per map on one core, 11 steps.
    pretrained_scorecam_images: int = 8
    trained_scorecam_images: int = 16  # ZFNet x0.25: 64 channels
    # sensitive when |Spearman| to the randomized maps lies below o + threshold_fraction * (1 - o), insensitive
    # above; o: the trained map's |Spearman| with another image's (what unrelated maps share)
    threshold_fraction: float = 0.5
    data_randomization: bool = True  # train the preset ZFNet on permuted labels and compare its maps
    fit_top1: float = 0.9  # training top-1 on the permuted labels the data randomization test needs (memorized)
    batch_size: int = 8
    scorecam_batch_size: int = 4
    train: TrainConfig = field(default_factory=TrainConfig)  # the shuffled-label run's recipe (the train preset)
    classes: Optional[int] = 10
    width: float = 1.0
    checkpoint_root: str = "${oc.env:CNNVIS_CHECKPOINTS,data/checkpoints}"


def method_options(model, e) -> dict:
    """What cams.build_method reads, with this model's own layers (its last conv, its LayerCAM layers)."""
    return dict(layer=resolve_layers(model, None, "last_conv", "experiment.layer"),
                layercam_layers=resolve_layers(model, None, "layercam", "experiment.layercam_layers"),
                batch_size=e.batch_size, scorecam_batch_size=e.scorecam_batch_size)


def imagenet_config(cfg, e):
    """The run's config with the pretrained network and the ImageNet validation images in place of the ZFNet's."""
    size = 64 if cfg.smoke else 224
    pcfg = copy.deepcopy(cfg)
    pcfg.model = OmegaConf.structured(ModelConfig(name=e.pretrained_model, pretrained=True, input_size=size))
    pcfg.dataset = OmegaConf.structured(DatasetConfig(name="imagenet_val", root=cfg.dataset.root,
                                                      subdir="imagenet-val-1300", resize=size,
                                                      resize_mode=ResizeMode.stretch))
    return pcfg


def pick(n_total: int, n: int, seed: int) -> np.ndarray:
    return np.sort(np.random.default_rng(seed).permutation(n_total)[:n])


def top1(model, x) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([model(x[i:i + 32]) for i in range(0, len(x), 32)]).argmax(1)


def run_network(out, model, x, title, key, e, seed, scorecam_images):
    """The cascade on one network: figures, the per-method table, the claims rows."""
    model = frozen(model)
    targets = top1(model, x)
    options = method_options(model, e)
    trained, skipped = trained_maps(e.methods, model, x, targets, options, scorecam_images)
    steps, sims, shown, seconds, across, constant = cascade(model, x, targets, trained, options, seed, key)
    out.figure(cascade_grid(x[0], shown, steps, f"{title}: maps of the trained model's top-1 class as layers are "
                            "re-initialized from the top (cumulative); absolute values, each map min-max scaled"),
               f"{key}_cascade")
    curves = {m: {measure: [s[measure] for s in per_step] for measure in MEASURES} for m, per_step in sims.items()}
    out.figure(similarity_curves(curves, steps, MEASURE_NAMES, f"{title}: similarity to the trained model's maps "
                                 "(mean, 95 % bootstrap band over images)"), f"{key}_similarity")
    out.table(cascade_table(sims, across, seconds, constant, e.threshold_fraction), f"{key}_cascade",
              title=f"Cascading randomization: {title}",
              notes=cascade_notes(model, len(x), steps, skipped, e, scorecam_images))
    metrics = {f"{key}/{m}/spearman_abs_final": float(np.mean(s[-1]["spearman_abs"])) for m, s in sims.items()}
    return cascade_claims(sims, across, key, e.threshold_fraction), metrics, targets


def data_randomization(out, cfg, record, e, model, images, train_set, val_set, x, labels, targets):
    """The preset ZFNet trained on permuted labels; its maps of the trained model's top-1 class compared with the
    true-label model's on the same images."""
    recipe = smoke_recipe(e.train, cfg.smoke)
    n_classes = len(images.classes)
    shuffled = ShuffledLabels(train_set, images.labels[train_set.idx], cfg.seed)
    random_model, history, ckpt = train_variant(
        lambda: build_model_at_width(cfg.model.name, n_classes, cfg.model.input_size, e.width),
        f"{cfg.model.name}_shuffled_labels", cfg, record,
        shuffled, val_set, recipe, cfg.seed, e.classes)
    train_seconds = float(history.seconds.sum())  # the epochs' own time: a finished run is reused, not retrained
    random_model = frozen(random_model.cpu())
    options = method_options(model, e)
    trained, skipped = trained_maps(e.methods, model, x, targets, options, e.trained_scorecam_images)
    fitted = float(history.train_top1.iloc[-1])
    table = data_randomization_table(trained, random_model, x, targets, options, e.threshold_fraction, fitted,
                                     e.fit_top1)
    true_acc = proportion((top1(model, x) == labels).numpy())
    random_acc = proportion((top1(random_model, x) == labels).numpy())
    notes = data_randomization_notes(e, n_classes, recipe.epochs, len(train_set), train_seconds, ckpt, fitted,
                                     len(x), true_acc, random_acc, skipped)
    out.table(table, "data_randomization",
              title="Data randomization: ZFNet trained on true vs permuted Caltech-101 labels", notes=notes)
    return {"data_randomization/train_seconds": train_seconds, "data_randomization/permuted_top1": random_acc.value}


def trained_zfnet(cfg, record):
    """The checkpoint of `train` (model.checkpoint); under smoke=true without one, the smoke recipe trains it."""
    path = cfg.model.checkpoint
    if path and Path(path).is_file():
        return model_from_config(cfg, record)
    if not cfg.smoke:
        raise FileNotFoundError(f"model.checkpoint={path} does not exist: the trained ZFNet comes from "
                                f"`{TRAIN_COMMAND}` (which writes data/checkpoints/zfnet_caltech101/last.pt); run it "
                                "first or set model.checkpoint=PATH")
    return None


def main(cfg, out, record):
    e = cfg.experiment
    unknown = sorted(set(e.methods) - set(ALL_METHODS))
    if unknown:
        raise ValueError(f"unknown method(s) {unknown} in experiment.methods; available: {', '.join(ALL_METHODS)}")
    if cfg.smoke:  # seconds: two images per network at small sizes; Score-CAM on the ZFNet only
        e.pretrained_images, e.trained_images, e.pretrained_scorecam_images, e.trained_scorecam_images = 2, 2, 0, 1
    pcfg = imagenet_config(cfg, e)
    imagenet = images_from_config(pcfg, record)  # data first: a missing dataset fails before any model runs
    images, train_set, val_set = train_val_sets(cfg, record, e.classes)
    zfnet = trained_zfnet(cfg, record)
    if zfnet is None:
        def build():
            return build_model_at_width(cfg.model.name, len(images.classes), cfg.model.input_size, e.width)

        zfnet, _, _ = train_variant(build, cfg.model.name, cfg, record, train_set, val_set,
                                    smoke_recipe(e.train, True), cfg.seed, e.classes)
        zfnet = zfnet.cpu()
    claims, metrics = [], {}

    size = pcfg.model.input_size
    chosen = pick(len(imagenet), e.pretrained_images, cfg.seed)
    x = imagenet.tensors(chosen, size)
    pretrained = model_from_config(pcfg, record)
    rows, m, _ = run_network(out, pretrained, x, f"{e.pretrained_model} (ImageNet weights), {len(x)} ImageNet "
                             "validation images", "imagenet", e, cfg.seed, e.pretrained_scorecam_images)
    claims += rows
    metrics.update(m)

    size = cfg.model.input_size
    val = val_set.idx[pick(len(val_set.idx), e.trained_images, cfg.seed)]
    xz = images.tensors(val, size)
    weights = f"checkpoint {cfg.model.checkpoint}" if cfg.model.checkpoint and Path(cfg.model.checkpoint).is_file() \
        else "smoke-trained"
    rows, m, targets = run_network(out, zfnet, xz, f"zfnet ({weights}), {len(xz)} Caltech-101 validation images",
                                   "caltech101", e, cfg.seed, e.trained_scorecam_images)
    claims += rows
    metrics.update(m)

    if e.data_randomization:
        labels = torch.as_tensor(images.labels[val])
        metrics.update(data_randomization(out, cfg, record, e, zfnet, images, train_set, val_set, xz, labels, targets))
    out.table(claims_frame(claims), "claims", title="Sanity checks (Adebayo et al. 2018): the paper's findings "
              "beside ours", notes="Each row is decided on the run's numbers by the rule written in it; the "
              "networks and images are ours (see each network's cascade table), the paper's are Inception v3 on "
              "ImageNet.")
    return metrics


def not_run(skipped: dict[str, str]) -> str:
    return "Not run here: " + "; ".join(f"{k} ({v})" for k, v in skipped.items()) + ". " if skipped else ""


def cascade_notes(model, n, steps, skipped, e, scorecam_images) -> str:
    blocks = cascade_blocks(model)
    scorecam = (f"Score-CAM: the first {min(scorecam_images, n)}" if scorecam_images else
                "Score-CAM left out: its experiment.*scorecam_images is 0")
    return (f"{n} images ({scorecam}); cascade steps, top first: "
            f"{', '.join(steps[1:])}; each step re-initializes one more layer's modules with parameters (module "
            f"count per layer: {', '.join(f'{k} {len(v)}' for k, v in blocks.items())}) with each module's own "
            "reset_parameters (BatchNorm: weight 1, bias 0, running mean 0, variance 1). Every map explains the "
            "trained model's top-1 class at every step. " + rule_text(e.threshold_fraction)
            + "; verdict 'undecided' otherwise. " + not_run(skipped) + NOTES)


def data_randomization_notes(e, n_classes, epochs, n_train, train_seconds, ckpt, fitted, n, true_acc, random_acc,
                             skipped) -> str:
    return (f"ZFNet (the train preset: width x{e.width}, {n_classes} classes, {epochs} epochs) trained on the "
            f"{n_train} training images with their labels permuted (seeded; class frequencies kept), in "
            f"{train_seconds:.0f} s ({ckpt}); its last epoch's training top-1 on the permuted labels: "
            f"{100 * fitted:.1f} % (a network that memorized them would approach 100 %; below "
            f"{100 * e.fit_top1:.0f} % every verdict is 'not comparable', as the test needs a model that fits its "
            f"labels). Top-1 on these {n} validation images: true labels "
            f"{true_acc.format(1, 100)}, permuted labels {random_acc.format(1, 100)} "
            f"(chance {100 / n_classes:.0f} %). "
            "Each row compares the two models' maps of the true-label model's top-1 class on the same images. "
            + rule_text(e.threshold_fraction).replace("fully randomized model", "permuted-label model") + ". "
            + not_run(skipped)
            + "Adebayo et al. ran this test on MNIST and Fashion-MNIST (Fig. 5); ours is the only network here "
              "that can be retrained within the budget.")


NOTES = (
    "Measures (Adebayo et al. 2018): Spearman rank correlation of the absolute maps (input-space signals: sum over "
    "colour channels of |a|) and of the signed maps (sum of a; class activation maps and saliency, Simonyan's "
    "max_c |gradient|, are non-negative already, so both agree), SSIM of the absolute maps scaled to [0, 1] by "
    "their maxima (scikit-image), and the Pearson correlation of their HOG descriptors (scikit-image defaults). "
    "A constant map (e.g. a Grad-CAM zeroed by its ReLU) correlates 0 with any non-constant map; column 'constant "
    "maps' gives their share. The threshold is measured per image from the other images' level, not fixed: a "
    "fixed 0.5 would call a method insensitive whose randomized maps resemble the trained ones only as much as "
    "any two images' maps do. Baselines: the edge detector (Sobel magnitude of the image) never reads the "
    "weights (similarity 1 at every step: the insensitive extreme); 'other images' maps' is each trained-model map "
    "against the next image's, the similarity that image-independent structure (centre bias, border effects) "
    "alone gives. The paper's network is Inception v3 on ImageNet; its figure reads orderings, not values."
)
