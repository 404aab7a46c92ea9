"""Typed configs: Hydra checks every value and key against these, so a typo or a wrong type fails loudly.

``Config`` is the root; ``model=``, ``dataset=`` and ``experiment=`` pick YAML files under ``conf/`` that
are merged onto ``ModelConfig``, ``DatasetConfig`` and the experiment's own dataclass (declared as
``Config`` in ``experiments/<name>.py`` and registered as ``schema/experiment/<name>``).
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

REPO = Path(__file__).resolve().parents[2]
EXPERIMENTS_DIR = REPO / "experiments"


class ResizeMode(Enum):
    crop = "crop"
    stretch = "stretch"


@dataclass
class ModelConfig:
    name: str = MISSING
    num_classes: int = 1000
    pretrained: bool = False
    checkpoint: Optional[str] = None  # trainer checkpoint or state dict; overrides `pretrained`
    input_size: int = 224


@dataclass
class DatasetConfig:
    name: str = MISSING
    root: str = "${oc.env:DATA_ROOT,data}"
    subdir: str = ""  # imagenet_val / imagefolder: the folder under root
    download: bool = False  # caltech101 / caltech256: torchvision's download
    include_background: bool = False  # BACKGROUND_Google (Caltech-101), 257.clutter (Caltech-256)
    train_per_class: Optional[int] = None
    test_per_class: Optional[int] = None
    fold: int = 0
    resize: Optional[int] = None  # cached image side; None: input_size * 256 / 224
    resize_mode: ResizeMode = ResizeMode.crop
    max_images: Optional[int] = None
    num_workers: int = 2


@dataclass
class ExperimentConfig:
    """Fields every experiment has; an experiment's ``Config`` subclasses this."""

    name: str = MISSING


@dataclass
class Config:
    model: ModelConfig = MISSING
    dataset: DatasetConfig = MISSING
    experiment: Any = MISSING
    results_dir: Optional[str] = None  # None: results/ for a canonical run, else outputs/ (cnnvis.runner)
    cache_dir: str = "${oc.env:CNNVIS_CACHE,data/cache}"
    seed: int = 0
    smoke: bool = False  # a sliver of the data, end to end, in seconds
    device: str = "auto"  # auto: cuda when available, else cpu
    threads: Optional[int] = None  # torch intra-op threads; None: CPU affinity / cgroup quota / OMP_NUM_THREADS


def experiment_names() -> list[str]:
    return sorted(p.stem for p in EXPERIMENTS_DIR.glob("*.py") if not p.stem.startswith("_"))


def register_configs() -> None:
    """Store the root schema and each experiment's schema in Hydra's ConfigStore."""
    from omegaconf import OmegaConf

    # the process id keeps the staging folders of simultaneous runs (torchrun's ranks) apart
    OmegaConf.register_new_resolver("cnnvis.pid", os.getpid, replace=True)
    cs = ConfigStore.instance()
    cs.store(name="base_config", node=Config)
    for name in experiment_names():
        module = importlib.import_module(f"experiments.{name}")
        # `name` preset, so YAML files need not repeat it
        cs.store(group="schema/experiment", name=name, node=module.Config(name=name))


def check_config(cfg) -> None:
    """Fail on keys no schema declares, including ones added with Hydra's ``+key=value``."""
    from dataclasses import fields

    from omegaconf import OmegaConf
    from omegaconf.errors import ConfigKeyError

    for group in ("model", "dataset", "experiment"):
        schema = OmegaConf.get_type(cfg[group])
        unknown = set(cfg[group]) - {f.name for f in fields(schema)}
        if unknown:
            valid = ", ".join(f.name for f in fields(schema))
            raise ConfigKeyError(f"unknown key(s) {', '.join(sorted(unknown))} in {group} "
                                 f"({schema.__module__}.{schema.__name__}); valid keys: {valid}")
    check_model_kind(cfg.experiment.name, cfg.model.name)


def check_model_kind(experiment: str, model: str) -> None:
    """Fail before anything is loaded when ``experiment`` cannot run ``model``'s kind of network, naming the
    models it takes and the experiments that take this one. An experiment module's ``MODEL_KINDS`` lists the
    kinds ``model=`` may have (``cnnvis.models.MODEL_KINDS``' values), or is None where it builds its own networks;
    its optional ``OTHER_MODEL_KEYS`` maps a kind to the experiment key that takes such a model besides ``model=``."""
    from cnnvis.models import MODEL_KINDS, UnsupportedModelError, model_kind

    def module(name):
        return importlib.import_module(f"experiments.{name}")

    kind, takes = model_kind(model), module(experiment).MODEL_KINDS
    if takes is None or kind in takes:
        return
    suitable = " | ".join(name for name, k in MODEL_KINDS.items() if k in takes)
    others = [f"experiment={name}" for name in experiment_names()
              if module(name).MODEL_KINDS is not None and kind in module(name).MODEL_KINDS]
    others += [f"experiment={name} experiment.{module(name).OTHER_MODEL_KEYS[kind]}={model}"
               for name in experiment_names() if kind in getattr(module(name), "OTHER_MODEL_KEYS", {})]
    raise UnsupportedModelError(f"{experiment} needs a {' or '.join(takes)} (model={suitable}); {model} is a "
                                f"{kind}: use {' or '.join(others)}")
