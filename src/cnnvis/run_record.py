"""What one run loaded, for its run.json. ``cnnvis.runner.run_experiment`` makes a ``RunRecord`` for each run and
hands it to the experiment's ``main(cfg, out, record)``, which passes it to whatever decodes images, builds a
configured model or reads or trains a checkpoint (``cnnvis.from_config``, ``cnnvis.data.decode_to_cache``,
``cnnvis.training.fit``); nothing is recorded in module state.

Who trained a checkpoint is kept beside it: ``<checkpoint>.json`` holds the checkpoint's sha256 and the runs that
trained it, oldest first, each with its ``run_id``, experiment, git commit, config hash and the epochs it completed
(``from_epoch``: done when it started; ``to_epoch``: done at the write). The sha256 tells a sidecar that describes
another version of the file (one replaced by hand, or a kill between the two writes) from the file's own.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class RunRecord:
    run: dict = field(default_factory=dict)  # who this run is: run_id, experiment, git_commit, config_sha256
    datasets: list[dict] = field(default_factory=list)  # every image set decoded: name, root, images, skipped
    weights: list[dict] = field(default_factory=list)  # every model built from a name: model, weights
    checkpoints: list[dict] = field(default_factory=list)  # every checkpoint read or trained: path, sha256, trainers

    def add_dataset(self, name: str, paths: list[str], images: int, skipped: int) -> None:
        """An image set decoded from ``paths`` (readable or not): ``images`` of them kept, ``skipped`` unreadable."""
        self.datasets.append({"name": name, "root": os.path.commonpath(paths) if paths else None, "images": images,
                              "skipped": skipped})

    def add_checkpoint(self, path) -> None:
        """A checkpoint this run read or wrote: its path, sha256, the runs its sidecar says trained it, and whether
        this run is one of them (a file read twice is listed once)."""
        sha256 = sha256_of(path)
        runs = trained_by(path, sha256)
        entry = {"path": str(path), "sha256": sha256,
                 "trained_by": runs if runs is not None else f"unknown: {why_untraced(path)}",
                 "trained_in_this_run": any(r.get("run_id") == self.run.get("run_id") for r in runs or [])}
        if entry not in self.checkpoints:
            self.checkpoints.append(entry)

    def shown(self, models: list[str], data: dict[str, int], checkpoints: list = ()) -> dict:
        """What one figure or claims row shows: ``{"network", "data"}`` for the networks of this run named
        ``models`` (with their weights), the ``checkpoints`` it read or trained, and ``data`` ({data set name: images
        it uses}). Naming anything this run did not record is an error: the text only repeats the record."""
        paths = [str(c) for c in checkpoints]
        missing = sorted(set(models) - {w["model"] for w in self.weights})
        missing += sorted(set(paths) - {c["path"] for c in self.checkpoints})
        missing += sorted(set(data) - {d["name"] for d in self.datasets})
        if missing:
            raise ValueError(f"{missing} not recorded by this run: it loaded networks "
                             f"{sorted({w['model'] for w in self.weights})}, checkpoints "
                             f"{[c['path'] for c in self.checkpoints]} and data sets "
                             f"{sorted({d['name'] for d in self.datasets})}")
        weights = [w for w in self.weights if w["model"] in models]
        read = [c for c in self.checkpoints if c["path"] in paths]
        networks = [describe_networks(weights, self.checkpoints)] if weights else []
        networks += checkpoints_text(read)
        return {"network": "; ".join(networks), "data": data_text(data) or "no images (the weights themselves)"}


def data_text(images: dict) -> str:
    """Data sets with the images used of each ({name: count}; a count of None or 0 gives the name alone)."""
    return "; ".join(f"{name} ({n} image{'s' * (n != 1)})" if n else name for name, n in images.items())


def trainer_text(runs) -> str:
    """Who trained a checkpoint, from its record's ``trained_by``: the last run's experiment and commit."""
    if not isinstance(runs, list) or not runs:
        return "trainer unknown"
    last = runs[-1]
    return f"trained by {last.get('experiment', '?')} at {str(last.get('git_commit', '?'))[:7]}"


def checkpoint_text(entry: dict) -> str:
    """A checkpoint of a run record by its folder (which names the architecture and data), with who trained it."""
    return f"{Path(entry['path']).parent.name}/{Path(entry['path']).name} ({trainer_of(entry)})"


def trainer_of(entry: dict) -> str:
    return "trained in this run" if entry.get("trained_in_this_run") else trainer_text(entry["trained_by"])


def checkpoints_text(entries: list[dict]) -> list[str]:
    """Checkpoints grouped by who trained them, each trainer named once: a folder's one file by its name, several
    (a run's kept epochs) by their count."""
    by_trainer = {}
    for c in entries:
        by_trainer.setdefault(trainer_of(c), {}).setdefault(Path(c["path"]).parent.name, []).append(c)
    return [", ".join(f"{folder}/{Path(cs[0]['path']).name}" if len(cs) == 1 else f"{len(cs)} checkpoints of {folder}"
                      for folder, cs in folders.items()) + f" ({who})" for who, folders in by_trainer.items()]


def describe_networks(weights: list[dict], checkpoints: list[dict], model: str = "its networks") -> str:
    """The networks of ``weights`` (a run record's entries) with their weights, a checkpoint with who trained it;
    with no entry, every checkpoint the run read or trained, or ``model`` with "weights not recorded" when there is
    none (a record that names nothing claims nothing)."""
    by_path = {c["path"]: c for c in checkpoints}
    texts = []
    for w in weights:
        if w["weights"] == "checkpoint" and w.get("path") in by_path:
            texts.append(f"{w['model']} (checkpoint {checkpoint_text(by_path[w['path']])})")
        else:
            texts.append(f"{w['model']} ({w['weights']})")
    if not weights:
        texts = checkpoints_text(checkpoints) or [f"{model} (weights not recorded)"]
    return "; ".join(dict.fromkeys(texts))


def sha256_of(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def sidecar(checkpoint) -> Path:
    return Path(f"{checkpoint}.json")


def write_sidecar(checkpoint, runs: list[dict]) -> None:
    """``<checkpoint>.json``: the checkpoint's sha256 and ``runs``, the runs that trained it (written atomically)."""
    path = sidecar(checkpoint)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps({"sha256": sha256_of(checkpoint), "trained_by": runs}, indent=1, default=str))
    os.replace(tmp, path)


def trained_by(checkpoint, sha256: str | None = None) -> list[dict] | None:
    """The runs that trained ``checkpoint`` (its sha256 ``sha256`` when known), oldest first; None when its sidecar is
    missing or describes another version of the file."""
    path = sidecar(checkpoint)
    if not path.is_file():
        return None
    meta = json.loads(path.read_text())
    return meta["trained_by"] if meta["sha256"] == (sha256 or sha256_of(checkpoint)) else None


def why_untraced(checkpoint) -> str:
    if sidecar(checkpoint).is_file():
        return f"{sidecar(checkpoint).name} describes another version of the file (its sha256 differs)"
    return (f"no {sidecar(checkpoint).name} beside it (written outside cnnvis.training, or before runs recorded who "
            "trained a checkpoint)")
