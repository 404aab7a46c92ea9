"""Checkpoints and run folders. Checkpoints hold only tensors and plain Python values, are written atomically
(temporary file, then rename) and loaded with ``weights_only=True``; they hold the RNG states, so a resumed run
draws what an uninterrupted one would. ``run_dir`` names one folder per (architecture, data, recipe, seed). A
checkpoint saved with ``trained_by`` gets a sidecar naming the runs that trained it (``cnnvis.run_record``)."""

from __future__ import annotations

import os
import random
from dataclasses import asdict
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from torch import nn

from cnnvis.run_record import write_sidecar
from cnnvis.training.recipe import TrainConfig, as_train_config


def _rng_state() -> dict:
    np_state = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "numpy": torch.from_numpy(np_state[1].astype(np.int64)),
             "numpy_pos": int(np_state[2]), "python": list(random.getstate()[1])}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(("MT19937", state["numpy"].numpy().astype(np.uint32), state["numpy_pos"], 0, 0.0))
    random.setstate((3, tuple(state["python"]), None))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_atomic(obj, path: Path, trained_by: Optional[list[dict]] = None) -> None:
    """torch.save to a temporary file, then rename: a kill never leaves a half-written checkpoint. ``trained_by``:
    the runs that trained it, for its sidecar (``<path>.json``; none without)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    torch.save(obj, tmp)
    os.replace(tmp, path)
    if trained_by is not None:
        write_sidecar(path, trained_by)


def load_checkpoint(path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


# recipe fields added after runs were kept: they enter the folder hash only when set, so those runs keep their folders
ADDED_LATER = ("conv1_init_std",)


def run_dir(root, tag: str, model: nn.Module, data_key: dict, cfg: TrainConfig, seed: int) -> Path:
    """``root/<tag>-<hash>``: one folder per (architecture, data, recipe, seed), so experiments that train the
    same thing share (and resume) one run."""
    import hashlib
    import json

    recipe = {k: v for k, v in asdict(as_train_config(cfg)).items()
              if k not in ("num_workers", "amp", "channels_last", "checkpoint_every", "eval_batch_size", "keep_epochs")
              and not (k in ADDED_LATER and v is None)}
    blob = json.dumps({"model": str(model), "data": data_key, "train": recipe, "seed": seed}, sort_keys=True,
                      default=str)
    return Path(root) / f"{tag}-{hashlib.sha1(blob.encode()).hexdigest()[:10]}"


def held_out_fingerprint(dataset) -> Optional[str]:
    """A short hash of a validation set's image positions (None without one): runs that select on different
    images do not share a checkpoint folder."""
    import hashlib

    if dataset is None:
        return None
    return hashlib.sha1(np.asarray(dataset.idx, dtype=np.int64).tobytes()).hexdigest()[:10]
