"""One shard plan for the dataset-level analyses: a list of images split into shards, each shard's results written
to a file of its own, and an exact merge, so 1, 2 or N processes (torchrun ranks, submitit jobs) give one answer.

Shards are contiguous runs of the list (``shard_indices``): a shard's per-image arrays then concatenate in image
order without a permutation, its image indices are its local ones plus its first, and a shard reads neighbouring
files (what a DataLoader over a folder reads fastest). A shard's file is written whole or not at all (a temporary
file, then ``os.replace``), so a killed shard leaves no file and re-runs alone. A folder holds one plan (its
``manifest.json``: items, shards, fingerprint of what is computed); another plan there is an error, never a mix.

Merges are exact: top-k lists merge by (value descending, image index ascending), the order ``mining`` keeps within
a shard, so any split gives the same entries in the same order; per-image arrays concatenate in image order, and
intervals are computed afterwards from the merged per-image values.
"""

from __future__ import annotations

import json
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

MANIFEST = "manifest.json"


class ShardPlanError(RuntimeError):
    """A shard folder holds another plan, or shards are missing at the merge; the message says which and what to do."""


def write_atomically(path: Path, write: Callable[[Path], None]) -> None:
    """``write(tmp)`` to a temporary file of this process beside ``path``, then rename it into place: readers and
    other writers (torchrun ranks, jobs) see the whole file or none."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp{path.suffix}")  # the suffix kept: np.save adds none
    write(tmp)
    os.replace(tmp, path)


def shard_indices(n_items: int, n_shards: int, shard: int, block: int = 1) -> np.ndarray:
    """The positions of shard ``shard`` of ``n_items`` items split into ``n_shards`` contiguous runs of whole
    ``block``s (the last block may be short) whose block counts differ by at most one (the first ones are longer).
    With ``block`` = the batch size, every split feeds the network the same batches: the same numbers to the bit."""
    if not 0 <= shard < n_shards:
        raise ValueError(f"shard {shard} of a {n_shards}-shard plan: shards are numbered 0..{n_shards - 1}")
    size, extra = divmod(-(-n_items // block), n_shards)
    start = shard * size + min(shard, extra)
    return np.arange(start * block, min((start + size + (shard < extra)) * block, n_items), dtype=np.int64)


def shards_of_rank(n_shards: int, rank: int, world: int) -> list[int]:
    """The shards one of ``world`` processes computes: every ``world``-th from ``rank``."""
    return list(range(rank, n_shards, world))


class ShardStore:
    """A folder of one plan's shard files: ``shard-<i>-of-<n>.npz``, each a dict of arrays, and ``manifest.json``
    (items, shards, the block ``shard_indices`` splits in, the fingerprint of what is computed)."""

    def __init__(self, folder, n_items: int, n_shards: int, fingerprint: str, block: int = 1):
        self.folder, self.n_shards = Path(folder), n_shards
        plan = {"n_items": n_items, "n_shards": n_shards, "block": block, "fingerprint": fingerprint}
        manifest = self.folder / MANIFEST
        if manifest.exists():
            found = json.loads(manifest.read_text())
            if found != plan:
                raise ShardPlanError(f"{self.folder} holds another shard plan ({found}; this run's: {plan}): remove "
                                     f"the folder, or give this plan another one (shards.dir)")
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        write_atomically(manifest, lambda tmp: tmp.write_text(json.dumps(plan)))  # first writers write the same text

    def path(self, shard: int) -> Path:
        return self.folder / f"shard-{shard}-of-{self.n_shards}.npz"

    def save(self, shard: int, arrays: dict[str, np.ndarray]) -> None:
        write_atomically(self.path(shard), lambda tmp: np.savez(tmp, **arrays))

    def load(self, shard: int) -> dict[str, np.ndarray]:
        with np.load(self.path(shard), allow_pickle=False) as f:
            return {key: f[key] for key in f.files}

    def done(self, shard: int) -> bool:
        """Whether shard ``shard``'s file is there and readable (a damaged file counts as missing)."""
        try:
            with zipfile.ZipFile(self.path(shard)) as f:
                return f.testzip() is None
        except (OSError, zipfile.BadZipFile):
            return False

    def missing_shards(self) -> list[int]:
        return [s for s in range(self.n_shards) if not self.done(s)]


def merge_topk(parts: list[dict[str, np.ndarray]], k: int) -> dict[str, np.ndarray]:
    """The exact top ``k`` per row of several top-k lists, each a dict of (rows, k_i) arrays with ``values`` and
    ``image_index`` (and any other arrays that travel with them), ordered by value descending, ties by image index."""
    merged = {key: np.concatenate([p[key] for p in parts], axis=1) for key in parts[0]}
    order = np.lexsort((merged["image_index"], -merged["values"]), axis=-1)[:, :k]
    return {key: np.take_along_axis(a, order, axis=1) for key, a in merged.items()}


def concat_arrays(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Per-image arrays of the shards, concatenated in shard (= image) order; a shard without rows has no arrays."""
    filled = [p for p in parts if p]
    return {key: np.concatenate([p[key] for p in filled]) for key in filled[0]} if filled else {}


def frame_to_arrays(frame: pd.DataFrame) -> dict[str, np.ndarray]:
    """A per-image table as one array per column (strings as unicode arrays, so no pickling)."""
    arrays = {c: frame[c].to_numpy() for c in frame.columns}
    return {c: a.astype(str) if a.dtype == object else a for c, a in arrays.items()}


def arrays_to_frame(arrays: dict[str, np.ndarray]) -> pd.DataFrame:
    return pd.DataFrame({c: a.astype(object) if a.dtype.kind == "U" else a for c, a in arrays.items()})


@dataclass
class ShardPlan:
    """How a process runs the dataset-level analyses: ``count`` shards; the ``shards`` it computes (None: all);
    ``folder`` for the shard files (None: in memory, one process); ``merges``: whether it merges after ``wait``
    (a barrier under torchrun) and returns the result, or returns None once its shards are written."""

    count: int = 1
    shards: list[int] | None = None
    folder: Path | None = None
    merges: bool = True
    fingerprint: str = ""
    wait: Callable[[], None] = field(default=lambda: None, repr=False)

    def run(self, name: str, n_items: int, compute: Callable[[np.ndarray], dict[str, np.ndarray]],
            merge: Callable[[list[dict[str, np.ndarray]]], object], block: int = 1):
        """``merge`` of ``compute(positions)`` over the shards of ``n_items`` items (``shard_indices`` in whole
        ``block``s; ``merge`` gets the non-empty ones); ``name`` keeps the analyses of one run apart in ``folder``.
        Shards already written are not computed again."""
        def computed(shard: int) -> dict[str, np.ndarray]:
            positions = shard_indices(n_items, self.count, shard, block)
            return compute(positions) if len(positions) else {}  # more shards than blocks: the last ones are empty

        if self.folder is None:
            return merge([part for part in map(computed, range(self.count)) if part])
        store = ShardStore(self.folder / name, n_items, self.count, self.fingerprint, block)
        for shard in range(self.count) if self.shards is None else self.shards:
            if not store.done(shard):
                store.save(shard, computed(shard))
        self.wait()
        if not self.merges:
            return None
        missing = store.missing_shards()
        if missing:
            raise ShardPlanError(f"{name}: shard(s) {missing} of {self.count} not written yet in {store.folder}: run "
                                 f"them (shards.index=<i>), then merge again")
        return merge([part for part in map(store.load, range(self.count)) if part])

    def rows(self, name: str, n_items: int, compute: Callable[[np.ndarray], pd.DataFrame]) -> pd.DataFrame | None:
        """A per-image table over ``n_items`` items, ``compute(positions)`` giving the rows of some of them."""
        if self.folder is None and self.count == 1:
            return compute(shard_indices(n_items, 1, 0))  # one process: the table as computed, no round trip
        return self.run(name, n_items, lambda idx: frame_to_arrays(compute(idx)),
                        lambda parts: arrays_to_frame(concat_arrays(parts)))

    def summary(self) -> dict[str, int]:
        """A process's metrics when it only wrote shards."""
        return {"shards": self.count, "shards_computed": self.count if self.shards is None else len(self.shards)}


ONE_PROCESS = ShardPlan()
