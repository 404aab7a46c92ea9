"""Typed configs: Hydra checks every value and key against these, so a typo or a wrong type fails loudly.

``Config`` is the root; ``model=``, ``dataset=`` and ``experiment=`` pick YAML files under ``conf/`` that
are merged onto ``ModelConfig``, ``DatasetConfig`` and the experiment's own dataclass (declared as
``Config`` in ``experiments/<name>.py``, handed to ``register_configs`` by ``experiments.experiment_configs``
and registered as ``schema/experiment/<name>``).
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

REPO = Path(__file__).resolve().parents[2]


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
    stream: bool = False  # decode images when read (DataLoader workers), not into the cache: memory bounded by the batch


@dataclass
class ShardsConfig:
    """The dataset-level analyses (top-k mining, occlusion statistics, CAM metrics) split over processes
    (``cnnvis.shards``): under torchrun each rank computes shards rank, rank + world size, ... and rank 0 merges;
    with submitit one job per ``index``, then one run with ``merge_only``."""

    count: int = 1  # shards per analysis; 1 and no torchrun: one process, nothing written
    index: Optional[int] = None  # compute this shard only, write it, make no tables (one submitit job)
    merge_only: bool = False  # compute no shard: merge the written ones and make the tables
    dir: Optional[str] = None  # where the shard files go; None: outputs/shards/<experiment>/<fingerprint>


@dataclass
class ExperimentConfig:
    """Fields every experiment has; an experiment's ``Config`` subclasses this."""

    name: str = MISSING


@dataclass
class Config:
    model: ModelConfig = MISSING
    dataset: DatasetConfig = MISSING
    experiment: Any = MISSING
    shards: ShardsConfig = field(default_factory=ShardsConfig)
    results_dir: Optional[str] = None  # None: results/ for a canonical run, else outputs/ (cnnvis.runner)
    cache_dir: str = "${oc.env:CNNVIS_CACHE,data/cache}"
    seed: int = 0
    smoke: bool = False  # a sliver of the data, end to end, in seconds
    device: str = "auto"  # auto: cuda when available, else cpu
    threads: Optional[int] = None  # torch intra-op threads; None: CPU affinity / cgroup quota / OMP_NUM_THREADS


def process_start_ticks(pid: int) -> int | None:
    """When process ``pid`` started, in clock ticks since boot (/proc/<pid>/stat): with the pid it names one process
    even after the id is reused. None when no such process runs; 0 for a live one on a system without /proc."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:  # alive, another user's
        pass
    try:  # field 22 of proc(5); the command name before it, in parentheses, may hold spaces
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    except OSError:
        return 0


def process_owner() -> str:
    """This process as ``<host>-<pid>-<start ticks>``: what a staging folder's name ends in."""
    return f"{socket.gethostname()}-{os.getpid()}-{process_start_ticks(os.getpid())}"


def register_configs(experiment_configs: dict[str, type]) -> None:
    """Store the root schema and each experiment's schema (``{name: its Config class}``) in Hydra's ConfigStore."""
    from omegaconf import OmegaConf

    # keeps the staging folders of simultaneous runs (torchrun's ranks) apart and names their owner; cached, so a
    # sweep's jobs (other processes under submitit) resolve the sweep's folder to the same name
    OmegaConf.register_new_resolver("cnnvis.owner", process_owner, replace=True, use_cache=True)
    cs = ConfigStore.instance()
    cs.store(name="base_config", node=Config)
    for name, config in experiment_configs.items():
        # `name` preset, so YAML files need not repeat it
        cs.store(group="schema/experiment", name=name, node=config(name=name))


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


# each experiment's kinds of network (None: it builds its own) and the keys that take other kinds besides model=
ExperimentModelKinds = dict[str, tuple[list[str] | None, dict[str, str]]]


def check_model_kind(experiment: str, model: str, takes: ExperimentModelKinds) -> None:
    """Fail before anything is loaded when ``experiment`` cannot run ``model``'s kind of network, naming the
    models it takes and the experiments that take this one. ``takes`` maps each experiment to its module's
    ``MODEL_KINDS`` (the kinds ``model=`` may have, ``cnnvis.models.MODEL_KINDS``' values; None where it builds its
    own networks) and ``OTHER_MODEL_KEYS`` (a kind -> the experiment key that takes such a model besides ``model=``),
    as ``experiments.experiment_model_kinds`` gives them."""
    from cnnvis.models import MODEL_KINDS, UnsupportedModelError, model_kind

    kind, (kinds, _) = model_kind(model), takes[experiment]
    if kinds is None or kind in kinds:
        return
    suitable = " | ".join(name for name, k in MODEL_KINDS.items() if k in kinds)
    others = [f"experiment={name}" for name, (k, _) in takes.items() if k is not None and kind in k]
    others += [f"experiment={name} experiment.{keys[kind]}={model}" for name, (_, keys) in takes.items() if kind in keys]
    raise UnsupportedModelError(f"{experiment} needs a {' or '.join(kinds)} (model={suitable}); {model} is a "
                                f"{kind}: use {' or '.join(others)}")


def unread_model_override(experiment: str, takes: ExperimentModelKinds,
                          overrides: list[str]) -> str | None:
    """What to warn when ``model=`` is given to an experiment that builds its own networks (``MODEL_KINDS`` None):
    it runs, but that choice changes nothing a user would expect it to."""
    given = [o for o in overrides if o.lstrip("+~").startswith("model=")]
    if takes[experiment][0] is not None or not given:
        return None
    return (f"{experiment} builds its own networks: {given[0].lstrip('+~')} is not used (see experiments/"
            f"{experiment}.py for the keys that choose them)")
