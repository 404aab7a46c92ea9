"""Runs one experiment for ``run.py``: seeds, device, where the run's files go, run.json, and clean failure (the
model and images a config names are ``cnnvis.from_config``'s).

A run assembles its files in a staging folder (``hydra.run.dir``, under ``outputs/.staging/``) and moves them
into place only when it succeeds, replacing the previous contents of that place whole. The place is
``results/<experiment>/`` for a canonical run (the README command, maybe with ``device``/``threads``),
``outputs/<experiment>/<overrides>/`` for anything else (``smoke=true``, other model, data, layer, sample size,
or the sample-photo fallback), and ``<results_dir>/<experiment>/`` whenever ``results_dir`` is given.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import re
import shutil
import socket
import subprocess
import time
from datetime import datetime
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from cnnvis.config import (REPO, ExperimentModelKinds, check_config, check_model_kind, process_owner,
                           process_start_ticks, unread_model_override)
from cnnvis.data import DatasetNotFoundError
from cnnvis.models import UnsupportedModelError
from cnnvis.provenance import config_sha256, source_sha256, working_tree_blobs
from cnnvis.results import Results, git_commit, markdown_table, write_run_json
from cnnvis.run_record import RunRecord
from cnnvis.threads import apply_threads

log = logging.getLogger(__name__)

CANONICAL_ROOT = "results"
OTHER_ROOT = "outputs"
# overrides that leave what is computed unchanged, so the run stays canonical
NEUTRAL_KEYS = {"experiment", "results_dir", "device", "threads"}
FALLBACK_DATASET = "samples"
# kept when a run replaces its folder: other runs' sweeps (sweep_destination), and git's ignore rules for it
KEPT_ON_REPLACE = ("multirun", "multirun-smoke", ".gitignore")
STAGING_ROOT = Path(OTHER_ROOT) / ".staging"  # conf/config.yaml's hydra.run.dir and hydra.sweep.dir
# a staging folder's name ends in its run's start time and config.process_owner(): host, pid, start ticks
STAGING_OWNER = re.compile(r"-\d{8}-\d{6}-\d{6}-(?P<host>.+)-(?P<pid>\d+)-(?P<ticks>\d+)$")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


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


def remove_abandoned_staging(root: Path = STAGING_ROOT) -> list[Path]:
    """Remove the staging folders of this host's runs whose process is gone (``kill -9``, a crash, a reboot), even
    when a newer process now has its id; another host's (a shared file system) are left alone."""
    removed = []
    for folder in sorted(root.iterdir()) if root.is_dir() else []:
        owner = STAGING_OWNER.search(folder.name)
        if owner is None or owner["host"] != socket.gethostname():
            continue
        ticks = process_start_ticks(int(owner["pid"]))
        if ticks is None or ticks not in (0, int(owner["ticks"])):  # 0: alive, where /proc cannot say since when
            shutil.rmtree(folder, ignore_errors=True)
            log.info("removed %s: its run's process is gone", folder)
            removed.append(folder)
    return removed


def source_of_run(experiment: str, overrides: list[str]) -> dict | None:
    """run.json's ``source`` (``cnnvis.provenance``): the hash of the source files of this run, with the conf/ files
    Hydra composed for it (its defaults list); None outside a git checkout."""
    loader = GlobalHydra.instance().config_loader()
    defaults = loader.compute_defaults_list(HydraConfig.get().job.config_name, overrides, RunMode.RUN).defaults
    conf = sorted(p for p in {f"conf/{d.config_path}.yaml" for d in defaults} if (REPO / p).is_file())
    try:
        blobs = working_tree_blobs(REPO)
    except (OSError, subprocess.CalledProcessError):
        log.warning("no source hash in run.json: %s is not a git checkout", REPO)
        return None
    return {"sha256": source_sha256(blobs, experiment, conf), "conf": conf}


def run_experiment(cfg: DictConfig, main: Callable[[DictConfig, Results, RunRecord], dict | None],
                   model_kinds: ExperimentModelKinds) -> dict:
    """Call the experiment's ``main(cfg, out, record)`` (``experiments/<name>.py``); it returns scalar metrics (or
    None) and adds what it loads to ``record``, a fresh ``RunRecord`` that run.json is written from.
    ``model_kinds``: every experiment's kinds of network (``config.check_model_kind``), checked before anything loads."""
    commit = git_commit()  # before anything is written: the tree the run starts from
    hydra_cfg = HydraConfig.get()
    staged = Path(hydra_cfg.runtime.output_dir)
    sweep_job = hydra_cfg.mode == RunMode.MULTIRUN  # its whole sweep is staged and placed by SweepSummary
    remove_abandoned_staging()
    start = time.time()
    try:
        check_config(cfg)
        check_model_kind(cfg.experiment.name, cfg.model.name, model_kinds)
        unread = unread_model_override(cfg.experiment.name, model_kinds, list(hydra_cfg.overrides.task))
        if unread:
            log.warning("%s", unread)
        source = source_of_run(cfg.experiment.name, list(hydra_cfg.overrides.task))
        config_hash = config_sha256(OmegaConf.to_container(cfg, resolve=True, enum_to_str=True))  # before main edits it
        run_id = f"{cfg.experiment.name}-{datetime.now():%Y%m%d-%H%M%S-%f}-{process_owner()}"
        record = RunRecord({"run_id": run_id, "experiment": cfg.experiment.name, "git_commit": commit,
                            "config_sha256": config_hash})
        seed_everything(cfg.seed)
        device = resolve_device(cfg.device)
        threads = apply_threads(cfg.threads)
        log.info("experiment %s on %s (%d threads)", cfg.experiment.name, device, threads)
        out = Results(staged)
        metrics = main(cfg, out, record) or {}
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
    changed = what_changed(overrides, cfg.smoke, record.datasets, cfg.dataset.name)
    dest = staged if sweep_job else destination(cfg.experiment.name, cfg.results_dir, changed)
    extra = {"canonical": not changed, "changed": changed, "run_id": run_id, "config_sha256": config_hash,
             "source": source, "datasets_loaded": record.datasets, "weights": record.weights,
             "checkpoints": record.checkpoints, "shows": out.shows}
    write_run_json(staged, cfg, device, wall, overrides, commit, metrics, extra=extra)
    log.info("done in %.1f s: %s", wall, dest)
    if not sweep_job:
        place(staged, dest)
    return metrics


def sweep_destination(config: DictConfig) -> Path:
    """Where a finished sweep goes: ``<results_dir>/<experiment>/multirun`` when results_dir is given, else under
    outputs/ (a sweep changes what is computed, so it is never a canonical run by itself); a smoke sweep goes to
    ``multirun-smoke`` beside it, so that it never replaces a real sweep."""
    folder = "multirun-smoke" if config.smoke else "multirun"
    return Path(config.results_dir or "outputs") / config.experiment.name / folder


class SweepSummary(Callback):
    """At the end of a ``--multirun`` sweep: ``summary.csv`` / ``.md`` with each job's overrides and metrics, then
    the staged sweep folder moves into place (only when every job finished)."""

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        jobs = {p.parent for p in sweep_dir.rglob(".hydra")}
        finished = {p.parent for p in sweep_dir.rglob("run.json")}
        if jobs - finished:
            log.error("%d sweep job(s) failed: nothing is replaced; the sweep stays in %s until the next run",
                      len(jobs - finished), sweep_dir)
            return
        self.summarize(sweep_dir)
        dest = sweep_destination(config)
        place(sweep_dir, dest)
        log.info("sweep: %s", dest)

    @staticmethod
    def summarize(sweep_dir: Path) -> None:
        rows = []
        # a swept path value (a=/x/y.pt) nests the job folder deeper, hence rglob
        for run_json in sorted(sweep_dir.rglob("run.json")):
            record = json.loads(run_json.read_text())
            row = {"job": str(run_json.parent.relative_to(sweep_dir))}
            row.update(dict(o.split("=", 1) for o in record["overrides"] if "=" in o and not o.startswith("experiment=")))
            row.update(record.get("metrics", {}))
            row["wall_time_s"] = record["wall_time_s"]
            rows.append(row)
        if not rows:
            log.warning("no finished jobs under %s: no sweep summary written", sweep_dir)
            return
        df = pd.DataFrame(rows)
        df.to_csv(sweep_dir / "summary.csv", index=False)
        (sweep_dir / "summary.md").write_text(markdown_table(df))
        log.info("sweep summary: %s\n%s", sweep_dir / "summary.csv", markdown_table(df))
