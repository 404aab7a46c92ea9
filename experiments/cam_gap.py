"""Zhou et al. 2016 (CAM): GAP surgery and CAM localization on Caltech-101.

``experiment.mode=surgery`` (the default, as the paper did it): a pretrained network (EfficientNet-Lite0 offline;
torchvision AlexNet / VGG16 with ``model.pretrained=true`` where their weights are cached) is cut after several
depths, a 3x3 conv + GAP + linear is added and trained on the frozen trunk's cached maps, per fold of the Caltech
protocol; accuracy, CAM localization beside the centre-box and full-image baselines and the uncut network's own CAM,
and the paper's claims by stated rules (``cnnvis.surgery``).

``experiment.mode=scratch`` (``experiment=cam_gap_scratch``): Tables 1-2 in miniature, a network and its GAP version
(layers after conv5 removed, 3x3 conv of 1024 units + global average pooling + linear; AlexNet*-GAP with two added
convs) trained from scratch under the same budget; their parameter counts and accuracy, and CAM localization on the
Caltech-101 categories with object boxes (largest component above 20% of the CAM's maximum, correct when
IoU >= 0.5). The original network (no GAP: CAM does not apply) is localized with Grad-CAM at conv5. Judged only
through the trained-enough gate (``cnnvis.gate``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Optional

import pandas as pd
import torch

from cnnvis.claims import with_control
from cnnvis.config import ExperimentConfig
from cnnvis.data import caltech101_box_categories, caltech101_boxes, index_dataset, smoke_subset
from cnnvis.from_config import model_from_config, train_val_test_sets, train_variant
from cnnvis.gap import GAP_VARIANTS, LAST_CONV, SURGERY_CUTS, UNCUT_LAYER
from cnnvis.gap_scratch import (SCRATCH_NO_CONTROL, SCRATCH_RULES, build_variant, chance_warning, localize, run_row,
                                scratch_notes, summary_table, table1_claims)
from cnnvis.gate import figure_note, gate_rows, training_gate
from cnnvis.models import CNN, UnsupportedModelError
from cnnvis.plotting.cams import method_grid
from cnnvis.plotting.training import seed_training_curves
from cnnvis.surgery import (SURGERY_RULES, baseline_hits, boxed_pool, summary, surgery_arm, surgery_claims,
                            surgery_figure, surgery_metrics, surgery_notes)
from cnnvis.training import TrainConfig, evaluate, smoke_recipe
from cnnvis.transfer import random_twin

log = logging.getLogger(__name__)


MODEL_KINDS = [CNN]  # the surgery cuts model= (mode=scratch trains experiment.variants at model.input_size)



@dataclass
class SurgeryConfig:
    cuts: Optional[list[str]] = None  # layers to cut after, shallowest first; None: cnnvis.gap.SURGERY_CUTS[model]
    width: int = 512  # units of the added 3x3 conv (the paper: 1024)
    folds: int = 3  # Caltech folds (per class train_per_class training images, the rest of the pool test)
    pool_per_class: int = 60  # boxed images per class whose maps are cached (train + test of every fold)
    epochs: int = 30
    lr: float = 1e-3  # Adam
    batch_size: int = 32
    weight_decay: float = 5e-4
    little_cost_points: float = 5.0  # "GAP costs little": the uncut network's accuracy lead stays below this
    control_folds: int = 3  # the random-weights control: the same surgery on a random-init trunk (0: not run)


@dataclass
class Config(ExperimentConfig):
    mode: str = "surgery"  # surgery (pretrained trunk, cut, added layers trained) | scratch (the miniature)
    surgery: SurgeryConfig = field(default_factory=SurgeryConfig)
    variants: list[str] = field(default_factory=lambda: ["alexnet", "alexnet-gap"])  # plain names or GAP_VARIANTS
    train: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=3, kaiming_init=True))
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])  # training seeds (init, order); the split is cfg.seed's
    val_per_class: int = 5  # held-out images per class for the lr plateau; the rest are the reported test images
    boxed_categories: bool = True  # train and validate on the 24 categories with boxes only; false: all 101
    threshold: float = 0.2  # the CAM paper's
    figure_images: int = 6
    checkpoint_root: str = "data/checkpoints"


def main(cfg, out, record):
    if cfg.experiment.mode == "surgery":
        return main_surgery(cfg, out, record)
    if cfg.experiment.mode != "scratch":
        raise ValueError(f"experiment.mode must be surgery or scratch, got {cfg.experiment.mode!r}")
    return main_scratch(cfg, out, record)


def main_scratch(cfg, out, record):
    e = cfg.experiment
    for name in e.variants:
        if name not in GAP_VARIANTS and name not in LAST_CONV:
            raise KeyError(f"unknown variant {name!r}; available: {', '.join([*LAST_CONV, *GAP_VARIANTS])}")
    if not e.seeds:
        raise ValueError("experiment.seeds is empty: give at least one training seed, e.g. experiment.seeds=[0,1,2]")
    recipe = smoke_recipe(e.train, cfg.smoke)
    boxed = caltech101_box_categories(cfg.dataset.root) if e.boxed_categories else None
    images, train_set, val_set, test_set = train_val_test_sets(  # data first
        cfg, record, class_filter=boxed.__contains__ if boxed else None, val_per_class=e.val_per_class)
    boxes = caltech101_boxes(index_dataset(cfg.dataset), cfg.dataset.root)
    n_classes, size = len(images.classes), cfg.model.input_size
    rows, histories, figure_maps, figure_boxes = [], {}, {}, None
    for seed in e.seeds:
        for name in e.variants:
            model, history, ckpt = train_variant(lambda: build_variant(name, n_classes, size), name.replace("*", "star"),
                                                 cfg, record, train_set, val_set, recipe, seed, None)
            model.eval()
            histories.setdefault(name, []).append(history)
            test = evaluate(model, test_set, next(model.parameters()).device)
            gate = training_gate(history, round(test["top1"] * len(test_set)), len(test_set), n_classes)
            model.cpu()
            found, shown = localize(model, name, images, test_set, boxes, size, e.threshold)
            rows.append(run_row(name, seed, model, history, test, gate, found))
            log.info("%s seed %d: %s (checkpoints %s)", name, seed, rows[-1], ckpt)
            k = min(e.figure_images, len(shown))
            if seed != e.seeds[0] or not k:  # the figure shows the first seed; smoke runs may have no boxed image
                continue
            figure_maps[name] = torch.stack([m for _, m, _ in shown[:k]])
            figure_boxes = [b for _, _, b in shown[:k]]
            figure_images = images.tensors([j for j, _, _ in shown[:k]], size)
            figure_labels = [images.classes[images.labels[j]] for j, _, _ in shown[:k]]
    runs = pd.DataFrame(rows)
    table = summary_table(runs)
    text = scratch_notes(recipe, len(train_set), len(val_set), len(test_set), n_classes, e.boxed_categories,
                         cfg.dataset.train_per_class, cfg.dataset.test_per_class, e.val_per_class, size, e.seeds,
                         cfg.seed, e.threshold, cfg.smoke)
    out.table(table, "gap_vs_original", title=f"GAP networks vs the originals on Caltech-101 ({size} px)",
              notes=text + chance_warning(runs, n_classes))
    out.table(runs, "runs", title="CAM GAP: every run (network x seed)", notes=text)
    gate = gate_rows(runs, "{network} seed {seed}")
    out.claims(with_control(table1_claims(runs, gate), None, SCRATCH_NO_CONTROL), "claims", notes=text + SCRATCH_RULES,
               title="CAM paper Table 1: the orderings, decided over seeds")
    if figure_boxes:
        out.figure(method_grid(figure_images, figure_maps, "CAM (GAP networks) / Grad-CAM (original) of the true class; "
                               f"green: object box; trained from scratch on Caltech-101{figure_note(gate)}",
                               figure_labels, figure_boxes), "cam_maps")
    out.figure(seed_training_curves(histories, f"{', '.join(e.variants)} on Caltech-101 (same budget){figure_note(gate)}"),
               "training_curves")
    means = runs.groupby("network", sort=False)[["test_top1_err", "loc_err_top1", "loc_err_gt_known"]].mean()
    return {"trained_enough": int(gate.passed),
            **{f"{name}/{k}": float(v) for name, r in means.iterrows() for k, v in r.items() if pd.notna(v)}}


# ---------------------------------------------------------------- surgery on a pretrained network (the default)


def main_surgery(cfg, out, record):
    e, s, m = cfg.experiment, cfg.experiment.surgery, cfg.model
    if m.name not in SURGERY_CUTS:
        raise UnsupportedModelError(f"cam_gap's surgery has no cuts for model={m.name}: use model="
                                    f"{' | '.join(SURGERY_CUTS)} (or experiment=cam_gap_scratch)")
    if cfg.dataset.name != "caltech101":
        raise ValueError(f"the surgery's localization needs Caltech-101's boxes; got dataset={cfg.dataset.name}")
    cuts = list(s.cuts or SURGERY_CUTS[m.name])
    uncut, uncut_spatial = UNCUT_LAYER[m.name]
    model = model_from_config(cfg, record, None if cfg.device == "auto" else cfg.device)
    size = m.input_size
    index = index_dataset(cfg.dataset)
    boxes = caltech101_boxes(index, cfg.dataset.root)
    index = index.select([i for i, p in enumerate(index.paths) if p in boxes])  # the boxed images only
    train_per_class, folds, pool_per_class = cfg.dataset.train_per_class or 30, s.folds, s.pool_per_class
    if cfg.smoke:
        index, train_per_class, folds, pool_per_class = smoke_subset(index, classes=3, per_class=6), 3, 2, 6
    images, labels, names, gt_boxes = boxed_pool(
        index, boxes, pool_per_class, cfg.seed, cfg.dataset.resize or round(size * 256 / 224),
        getattr(cfg.dataset.resize_mode, "value", cfg.dataset.resize_mode), size, cfg.cache_dir, cfg.dataset.num_workers,
        record)
    epochs = 2 if cfg.smoke else s.epochs

    def arm(net, tag, k):  # one trunk's surgery, the trained one and the random-weights control alike
        return surgery_arm(net, images, labels, gt_boxes, cuts, uncut, uncut_spatial, size, cfg.cache_dir, tag,
                           len(names), train_per_class, k, cfg.seed, s.width, epochs, s.lr, s.batch_size,
                           s.weight_decay, e.threshold)

    runs, hits, (shown, fold0_test), histories = arm(model, m.name, folds)
    baselines = baseline_hits(gt_boxes, size)
    table = summary(runs, hits, baselines)
    network = f"{m.name} ({model.weights_source})"
    claims = surgery_claims(runs, hits, baselines, cuts, uncut, s.little_cost_points, m.name)
    text = surgery_notes(network, cuts, uncut, uncut_spatial, len(images), len(names), train_per_class, folds, epochs,
                         s.width, s.lr, s.weight_decay, s.batch_size, s.pool_per_class, size, e.threshold, cfg.seed,
                         cfg.cache_dir, cfg.smoke)
    control, why_none = None, "not run: experiment.surgery.control_folds=0"
    if s.control_folds:
        c_runs, c_hits, _, _ = arm(random_twin(model, m.name, size, cfg.seed), f"{m.name}-random",
                                   min(s.control_folds, folds))
        control = surgery_claims(c_runs, c_hits, baselines, cuts, uncut, s.little_cost_points, m.name)
        out.table(summary(c_runs, c_hits, baselines), "control_gap_vs_original", title="Random-weights control: the "
                  f"same surgery on a randomly initialized {m.name} trunk (seed {cfg.seed})", notes=text)
        out.table(c_runs, "control_runs", title="Random-weights control: every added head", notes=text)
    out.table(table, "gap_vs_original", title=f"GAP surgery on {network}: accuracy and CAM localization on "
              f"Caltech-101 ({len(names)} boxed categories, {size} px)", notes=text)
    out.table(runs, "runs", title="GAP surgery: every added head (network x fold) with its trained-enough gate",
              notes=text)
    out.claims(with_control(claims, control, why_none), "claims", notes=text + SURGERY_RULES,
               title="CAM paper: GAP surgery's claims, decided by stated rules")
    out.table(histories, "head_histories", title="GAP surgery: each added head's training, epoch by epoch (what "
              "the trained-enough gate reads)", notes=text)
    gate = gate_rows(runs, "{network} fold {fold}")
    fig = surgery_figure(images, labels, names, gt_boxes, shown, fold0_test, runs, uncut, size, e.figure_images,
                         f"GAP surgery on {network}:\nCAM of the true class at each cut (added 3x3 conv of {s.width} + GAP + "
                         f"linear, trunk frozen)\nCaltech-101, fold 0 test images; green: object box{figure_note(gate)}")
    if fig is not None:
        out.figure(fig, "cam_maps")
    return surgery_metrics(runs)
