"""Sanity checks for saliency maps (Adebayo et al. 2018), for every method of `cam_methods`, on two networks:
EfficientNet-Lite0 (ImageNet weights, ImageNet validation images) and the ZFNet of `train` (its CPU preset: the
same run is reused, or trained when missing; judged by the trained-enough gate), on its Caltech-101 validation images.

Cascading model-parameter randomization (Fig. 2 / Fig. 4): layers re-initialized from the logits down,
cumulatively, and each step's map compared with the trained model's map of the same image and class (the trained
model's top-1) by Spearman rank correlation (absolute and signed), SSIM and HOG similarity (cnnvis.sanity), against
the trained map of an image of another class; the paper's findings decided at the top-layer steps
(cnnvis.sanity_claims). Data randomization (Sec. 5): the same ZFNet recipe trained on permuted labels, its maps
compared with the true-label model's.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import torch
from omegaconf import OmegaConf

from cnnvis.ablations import build_model_at_width
from cnnvis.cams import ALL_METHODS
from cnnvis.claims import with_control
from cnnvis.config import DatasetConfig, ExperimentConfig, ModelConfig, ResizeMode
from cnnvis.from_config import images_from_config, model_from_config, train_val_sets, train_variant
from cnnvis.gate import combine
from cnnvis.models import CNN, frozen
from cnnvis.plotting.sanity import cascade_grid, similarity_curves
from cnnvis.run_gate import run_gate
from cnnvis.sanity import (MEASURE_NAMES, MEASURES, cascade, cascade_blocks, check_methods, method_options,
                           permuted_label_maps, seeded_subset, top1_classes, trained_maps)
from cnnvis.sanity_claims import (cascade_claims, cascade_table, data_randomization_notes, data_randomization_table,
                                  fragility_table, fragility_text, memorization_gate, not_run, rule_text,
                                  top_layer_steps)
from cnnvis.stats import proportion
from cnnvis.training import ShuffledLabels, TrainConfig, smoke_recipe


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
    data_randomization: bool = True  # train the preset ZFNet on permuted labels and compare its maps
    fit_top1: float = 0.9  # training top-1 on the permuted labels the data randomization test needs (memorized)
    batch_size: int = 8
    scorecam_batch_size: int = 4
    train: TrainConfig = field(default_factory=TrainConfig)  # both ZFNets' recipe (the train preset)
    classes: Optional[int] = 10
    width: float = 1.0
    checkpoint_root: str = "${oc.env:CNNVIS_CHECKPOINTS,data/checkpoints}"


def imagenet_config(cfg, e):
    """The run's config with the pretrained network and the ImageNet validation images in place of the ZFNet's."""
    size = 64 if cfg.smoke else 224
    pcfg = copy.deepcopy(cfg)
    pcfg.model = OmegaConf.structured(ModelConfig(name=e.pretrained_model, pretrained=True, input_size=size))
    pcfg.dataset = OmegaConf.structured(DatasetConfig(name="imagenet_val", root=cfg.dataset.root,
                                                      subdir="imagenet-val-1300", resize=size,
                                                      resize_mode=ResizeMode.stretch))
    return pcfg


def zfnet_on(cfg, record, e, n_classes, train_set, val_set, tag):
    """The preset ZFNet trained on ``train_set`` (true or permuted labels) in its run folder, reused when complete
    (with the true labels it is `train`'s run); (model, history, checkpoint folder)."""
    model, history, ckpt = train_variant(
        lambda: build_model_at_width(cfg.model.name, n_classes, cfg.model.input_size, e.width), tag, cfg, record,
        train_set, val_set, smoke_recipe(e.train, cfg.smoke), cfg.seed, e.classes)
    return frozen(model.cpu()), history, ckpt


def run_network(out, model, x, labels, title, key, e, seed, scorecam_images, shows, gate=None):
    """The cascade on one network: figures and the per-method table; returns the cascade, its claims (gated by
    ``gate``), metrics and what the data randomization reuses (top-1 classes, trained maps, methods refused).
    ``shows``: this network and its images (``RunRecord.shown``), for the figures and claims rows."""
    targets = top1_classes(model, x)
    options = method_options(model, e.batch_size, e.scorecam_batch_size)
    trained, skipped = trained_maps(e.methods, model, x, targets, options, scorecam_images)
    run = cascade(model, x, targets, labels, trained, options, seed, key)
    out.figure(cascade_grid(x[0], run.shown, run.steps, f"{title}: maps of the trained model's top-1 class as layers "
                            "are re-initialized from the top (cumulative); absolute values, each map min-max scaled"),
               f"{key}_cascade", shows=shows)
    curves = {m: {measure: [s[measure] for s in per_step] for measure in MEASURES} for m, per_step in run.sims.items()}
    out.figure(similarity_curves(curves, run.steps, MEASURE_NAMES, f"{title}: similarity to the trained model's "
                                 "maps (mean, 95 % bootstrap band over images)"), f"{key}_similarity", shows=shows)
    out.table(cascade_table(run), f"{key}_cascade", title=f"Cascading randomization: {title}",
              notes=cascade_notes(model, len(x), run.steps, skipped, scorecam_images, gate))
    metrics = {f"{key}/{m}/spearman_abs_final": float(np.mean(s[-1]["spearman_abs"])) for m, s in run.sims.items()}
    return run, cascade_claims(run, key, gate), metrics, (targets, trained, skipped)


def data_randomization(out, cfg, record, e, model, images, train_set, val_set, x, labels, maps, gate):
    """The preset ZFNet trained on permuted labels; its maps of the true-label model's top-1 class compared with the
    true-label model's (``maps``: top-1 classes, its maps, the methods that refused it) on the same images."""
    shuffled = ShuffledLabels(train_set, images.labels[train_set.idx], cfg.seed)
    random_model, history, ckpt = zfnet_on(cfg, record, e, len(images.classes), shuffled, val_set,
                                           f"{cfg.model.name}_shuffled_labels")
    train_seconds = float(history.seconds.sum())  # the epochs' own time: a finished run is reused, not retrained
    fitted = float(history.train_top1.iloc[-1])
    targets, trained, skipped = maps
    sims, other, constant = permuted_label_maps(trained, random_model, x, targets, labels.numpy(),
                                                method_options(model, e.batch_size, e.scorecam_batch_size), cfg.seed)
    both = combine(gate, memorization_gate(fitted, e.fit_top1))
    true_acc = proportion((top1_classes(model, x) == labels).numpy())
    random_acc = proportion((top1_classes(random_model, x) == labels).numpy())
    notes = data_randomization_notes(e, len(images.classes), len(history), len(train_set), train_seconds, ckpt,
                                     fitted, len(x), true_acc, random_acc, skipped, both)
    out.table(data_randomization_table(sims, other, constant, both), "data_randomization",
              title="Data randomization: ZFNet trained on true vs permuted Caltech-101 labels", notes=notes)
    return {"data_randomization/train_seconds": train_seconds, "data_randomization/permuted_top1": random_acc.value}


def main(cfg, out, record):
    e = cfg.experiment
    check_methods(e.methods)
    if cfg.smoke:  # seconds: four images per network (two classes at least) at small sizes; Score-CAM on the ZFNet only
        e.pretrained_images, e.trained_images, e.pretrained_scorecam_images, e.trained_scorecam_images = 4, 4, 0, 1
    pcfg = imagenet_config(cfg, e)
    imagenet = images_from_config(pcfg, record)  # data first: a missing dataset fails before any model runs
    images, train_set, val_set = train_val_sets(cfg, record, e.classes)
    zfnet, history, ckpt = zfnet_on(cfg, record, e, len(images.classes), train_set, val_set, cfg.model.name)
    gate, _ = run_gate(history, float(history.val_top1.iloc[-1]), len(val_set), len(images.classes))

    chosen = seeded_subset(len(imagenet), e.pretrained_images, cfg.seed)
    x = imagenet.tensors(chosen, pcfg.model.input_size)
    pretrained = frozen(model_from_config(pcfg, record))
    imagenet_shows = record.shown([e.pretrained_model], {"imagenet_val": len(x)})
    imagenet_run, claims, metrics, _ = run_network(
        out, pretrained, x, imagenet.labels[chosen], f"{e.pretrained_model} (ImageNet weights), {len(x)} ImageNet "
        "validation images", "imagenet", e, cfg.seed, e.pretrained_scorecam_images, imagenet_shows)

    val = val_set.idx[seeded_subset(len(val_set.idx), e.trained_images, cfg.seed)]
    xz, labels = images.tensors(val, cfg.model.input_size), torch.as_tensor(images.labels[val])
    caltech_shows = record.shown([], {"caltech101": len(xz)}, [ckpt / "last.pt"])
    caltech_run, rows, m, maps = run_network(
        out, zfnet, xz, labels.numpy(), f"zfnet ({len(history)} epochs, {ckpt.name}; trained-enough gate "
        f"{'passed' if gate.passed else 'FAILED'}), {len(xz)} Caltech-101 validation images", "caltech101", e,
        cfg.seed, e.trained_scorecam_images, caltech_shows, gate)
    shows = [imagenet_shows] * len(claims) + [caltech_shows] * len(rows)
    claims += rows
    metrics.update(m, **{"caltech101/trained_enough": int(gate.passed)})

    if e.data_randomization:
        metrics.update(data_randomization(out, cfg, record, e, zfnet, images, train_set, val_set, xz, labels, maps, gate))
    claims = with_control(claims, None, "not applicable: the cascade is itself the random-weights comparison")
    out.claims(claims, "claims", title="Sanity checks (Adebayo et al. 2018): the paper's findings beside ours", shows=shows,
               notes="Each row is decided on the run's numbers by the rule written in it; the networks and images are "
                     "ours (see each network's cascade table), the paper's are Inception v3 on ImageNet. The ZFNet's "
                     f"trained-enough gate (cnnvis.gate): {'passed' if gate.passed else 'FAILED'}: {gate.reason}.")
    out.table(fragility_table({"imagenet": imagenet_run, "caltech101": caltech_run}), "fragility",
              title="How each finding's verdict moves with the rule's free parameters (one at a time)",
              notes=fragility_text() + " The caltech101 rows are computed whatever the ZFNet's trained-enough "
              "gate says; the claims table shows them 'not comparable' when it failed.")
    return metrics


def cascade_notes(model, n, steps, skipped, scorecam_images, gate) -> str:
    blocks = cascade_blocks(model)
    top = [steps[k] for k in top_layer_steps(len(steps) - 1)]
    scorecam = (f"Score-CAM: the first {min(scorecam_images, n)}" if scorecam_images else
                "Score-CAM left out: its experiment.*scorecam_images is 0")
    trained = ("" if gate is None else f"Trained-enough gate (cnnvis.gate; held-out: the validation images): "
               f"{'passed' if gate.passed else 'FAILED, so its claims are not comparable'}: {gate.reason}. ")
    return (f"{n} images ({scorecam}); cascade steps, top first: {', '.join(steps[1:])} (top-layer steps: "
            f"{', '.join(top)}); each step re-initializes one more layer's modules with parameters (module count per "
            f"layer: {', '.join(f'{k} {len(v)}' for k, v in blocks.items())}) with each module's own reset_parameters "
            "(BatchNorm: weight 1, bias 0, running mean 0, variance 1). Every map explains the trained model's top-1 "
            "class at every step. Columns 'last top-layer step' and 'fully randomized' apply the step rule of the "
            "claims ('undecided' when the interval includes the margin): " + rule_text() + ". " + trained
            + not_run(skipped) + NOTES)


NOTES = (
    "Measures (Adebayo et al. 2018): Spearman rank correlation of the absolute maps (input-space signals: sum over "
    "colour channels of |a|) and of the signed maps (sum of a; class activation maps and saliency, Simonyan's "
    "max_c |gradient|, are non-negative already, so both agree), SSIM of the absolute maps scaled to [0, 1] by "
    "their maxima (scikit-image), and the Pearson correlation of their HOG descriptors (scikit-image defaults). "
    "A constant map (e.g. a Grad-CAM zeroed by its ReLU) correlates 0 with any non-constant map; column 'constant "
    "maps' gives their share. The bar is measured per image, not fixed: o, the trained map's similarity to the "
    "trained map of an image of another class (seeded pairs), is what image-independent structure (centre bias, "
    "border effects) alone gives, and a randomized map no closer than that (within the margin) has lost what the "
    "trained weights put in it. Baselines: the edge detector (Sobel magnitude of the image) never reads the "
    "weights (similarity 1 at every step: the insensitive extreme). The paper's network is Inception v3 on "
    "ImageNet; its figure reads orderings, not values."
)
