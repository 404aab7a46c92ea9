"""The glue between an experiment's config and the training core: the train / validation / test sets of
``cfg.dataset``, the key of a run's data, the smoke recipe, and ``train_variant`` (build, then ``fit`` in the run's
own folder). The modules below take plain arguments."""

from __future__ import annotations

from typing import Callable, Optional

import numpy as np
import torch
from torch import nn

from cnnvis.training.checkpoints import held_out_fingerprint, run_dir
from cnnvis.training.loop import fit
from cnnvis.training.recipe import TrainConfig, as_train_config
from cnnvis.training.splits import keep_classes, largest_classes, split_held_out


def train_val_sets(cfg, classes: Optional[int] = None, input_size: Optional[int] = None,
                   class_filter: Optional[Callable] = None):
    """(images, train set, val set) of ``cfg.dataset``: the ``classes`` largest classes (of those whose name
    passes ``class_filter``), the papers' per-class split (``dataset.train_per_class`` / ``test_per_class`` /
    ``fold``, seeded by ``cfg.seed``), images decoded through the cache at ``dataset.resize`` (default
    input_size * 256 / 224). With ``cfg.smoke``: 3 classes of 4 images (2 train, 2 val)."""
    from cnnvis.data import ImageTensors, decode_to_cache, index_dataset, per_class_split, smoke_subset

    size = input_size or cfg.model.input_size
    index = index_dataset(cfg.dataset)
    if class_filter is not None:
        index = keep_classes(index, [c for c, name in enumerate(index.classes) if class_filter(name)])
    index = largest_classes(index, classes)
    train_per_class, test_per_class = cfg.dataset.train_per_class, cfg.dataset.test_per_class
    if cfg.smoke:
        index = largest_classes(smoke_subset(index, classes=3, per_class=4), 3)
        train_per_class, test_per_class = 2, 2
    train_idx, val_idx = per_class_split(index.labels, train_per_class, test_per_class, cfg.dataset.fold, cfg.seed)
    keep = np.concatenate([train_idx, val_idx])
    images = decode_to_cache(index.select(np.sort(keep)), cfg.dataset.resize or round(size * 256 / 224),
                             getattr(cfg.dataset.resize_mode, "value", cfg.dataset.resize_mode), cfg.cache_dir,
                             cfg.dataset.num_workers)
    # positions in the decoded (sorted, kept) set; no image is unreadable in the datasets used here
    position = {p: i for i, p in enumerate(images.paths)}
    train = [position[index.paths[i]] for i in train_idx if index.paths[i] in position]
    val = [position[index.paths[i]] for i in val_idx if index.paths[i] in position]
    return images, ImageTensors(images, train, size, train=True), ImageTensors(images, val, size)


def train_val_test_sets(cfg, classes: Optional[int] = None, input_size: Optional[int] = None,
                        class_filter: Optional[Callable] = None, val_per_class: int = 5):
    """(images, train, val, test): ``train_val_sets``'s held-out images split per class into ``val_per_class``
    for selection (the learning-rate plateau, a best epoch) and the rest for the reported numbers, so no
    held-out image is used twice. With ``cfg.smoke``: 1 val and 1 test image per class."""
    from cnnvis.data import ImageTensors

    images, train, held_out = train_val_sets(cfg, classes, input_size, class_filter)
    val, test = split_held_out(images.labels, held_out.idx, 1 if cfg.smoke else val_per_class, cfg.seed)
    if len(test) == 0:
        raise ValueError(f"no test images left after {val_per_class} validation images per class: raise "
                         f"dataset.test_per_class (now {cfg.dataset.test_per_class}) or lower val_per_class")
    return images, train, ImageTensors(images, val, held_out.size), ImageTensors(images, test, held_out.size)


def data_key(cfg, classes: Optional[int]) -> dict:
    d = cfg.dataset
    return {"dataset": d.name, "classes": classes, "train_per_class": d.train_per_class,
            "test_per_class": d.test_per_class, "fold": d.fold, "resize": d.resize, "smoke": cfg.smoke,
            "split_seed": cfg.seed, "input_size": cfg.model.input_size}


def smoke_recipe(cfg: TrainConfig, smoke: bool) -> TrainConfig:
    """``smoke=true``: 2 epochs, no loader workers (the run ends in seconds)."""
    cfg = as_train_config(cfg)
    if not smoke:
        return cfg
    from dataclasses import replace

    return replace(cfg, epochs=min(cfg.epochs, 2), num_workers=0, keep_epochs=None)


def train_variant(build: Callable[[], nn.Module], tag: str, cfg, train_set, val_set, recipe: TrainConfig, seed: int,
                  classes: Optional[int], on_epoch_end=None):
    """Build a model under ``seed`` and train it (or resume / reuse its finished run) in its ``run_dir``;
    returns (model, history, checkpoint folder)."""
    torch.manual_seed(seed)
    model = build()
    key = {**data_key(cfg, classes), "val_images": held_out_fingerprint(val_set)}  # the plateau reads val
    ckpt = run_dir(cfg.experiment.checkpoint_root, f"{tag}_{cfg.dataset.name}", model, key, recipe, seed)
    device = None if cfg.device == "auto" else cfg.device
    history = fit(model, train_set, val_set, recipe, ckpt, device, seed, on_epoch_end=on_epoch_end)
    return model, history, ckpt
