"""Runs one experiment for ``run.py``: seeds, device, output folder, run.json, and clean failure."""

from __future__ import annotations

import importlib
import logging
import random
import time

import numpy as np
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from cnnvis.config import check_config
from cnnvis.data import DatasetNotFoundError, load_images
from cnnvis.models import build_model
from cnnvis.results import Results, remove_if_only_hydra_files, write_run_json
from cnnvis.threads import apply_threads

log = logging.getLogger(__name__)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def model_from_config(cfg: DictConfig, device=None) -> torch.nn.Module:
    """The model of ``cfg.model``, in eval mode, on ``device``."""
    m = cfg.model
    model = build_model(m.name, m.num_classes, m.pretrained, m.checkpoint, m.input_size)
    return model.eval().to(device or "cpu")


def images_from_config(cfg: DictConfig, input_size: int | None = None):
    """The dataset of ``cfg.dataset``, decoded through the on-disk cache (a sliver when ``cfg.smoke``)."""
    return load_images(cfg.dataset, input_size or cfg.model.input_size, cfg.cache_dir, cfg.smoke)


def run_experiment(cfg: DictConfig) -> dict:
    """Import ``experiments/<name>.py`` and call its ``main(cfg, out)``; it returns scalar metrics (or None)."""
    hydra_cfg = HydraConfig.get()
    out_dir = hydra_cfg.runtime.output_dir
    start = time.time()
    try:
        check_config(cfg)
        seed_everything(cfg.seed)
        device = resolve_device(cfg.device)
        threads = apply_threads(cfg.threads)
        module = importlib.import_module(f"experiments.{cfg.experiment.name}")
        log.info("experiment %s on %s (%d threads) -> %s", cfg.experiment.name, device, threads, out_dir)
        metrics = module.main(cfg, Results(out_dir)) or {}
    except DatasetNotFoundError as err:  # a user error, not a bug: the message without a traceback
        remove_if_only_hydra_files(out_dir)
        log.error("%s", err)
        raise SystemExit(2) from None
    except BaseException:
        remove_if_only_hydra_files(out_dir)
        raise
    wall = time.time() - start
    write_run_json(out_dir, cfg, device, wall, hydra_cfg.overrides.task, metrics)
    log.info("done in %.1f s: %s", wall, out_dir)
    return metrics
