"""How many threads torch should use, from what this process may really run on.

A 2-core machine shared with other jobs made torch 100x slower: its OpenMP threads spin-wait for each other, so
a thread that the scheduler parks behind another job stalls every parallel region. Two remedies, both here:

- ``default_passive_wait()`` sets ``OMP_WAIT_POLICY=PASSIVE`` (sleeping, not spinning, between regions) unless
  the user set it; OpenMP reads it once, when torch is first imported, so ``cnnvis/__init__.py`` and ``run.py``
  call it before any torch import.
- ``torch_threads(requested)`` counts the CPUs the process may use (its CPU affinity, capped by a cgroup v2
  ``cpu.max`` or v1 ``cpu.cfs_quota_us`` quota) and honours ``OMP_NUM_THREADS`` when set; ``apply_threads``
  hands that to ``torch.set_num_threads`` (the root config's ``threads`` key, applied once per run).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_CGROUP = Path("/proc/self/cgroup")
V1_CPU_MOUNTS = ("cpu", "cpu,cpuacct", "cpuacct,cpu")


def default_passive_wait() -> None:
    """``OMP_WAIT_POLICY=PASSIVE`` unless already set: idle OpenMP threads sleep instead of spinning."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def _self_and_parents(top: Path, relative: str) -> list[Path]:
    """``top/relative`` and each folder above it up to ``top`` that exists: a quota on any of them applies."""
    here = top / relative.strip("/")
    chain = [here, *here.parents]
    return [d for d in chain[:chain.index(top) + 1] if d.is_dir()]


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _quota_v2(folder: Path) -> float | None:
    """CPUs allowed by ``cpu.max`` ("max 100000" or "<quota> <period>"), None when unlimited or absent."""
    text = _read(folder / "cpu.max")
    if not text:
        return None
    quota, _, period = text.partition(" ")
    return None if quota == "max" else int(quota) / int(period or 100000)


def _quota_v1(folder: Path) -> float | None:
    """CPUs allowed by ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``, None when unlimited (-1) or absent."""
    quota, period = _read(folder / "cpu.cfs_quota_us"), _read(folder / "cpu.cfs_period_us")
    if quota is None or period is None or int(quota) <= 0:
        return None
    return int(quota) / int(period)


def cgroup_cpu_limit(root: Path = CGROUP_ROOT, proc_cgroup: Path = PROC_CGROUP) -> float | None:
    """The CPU quota of this process's cgroup (the smallest along its path), in CPUs; None when unlimited."""
    lines = (_read(proc_cgroup) or "").splitlines()
    quotas = []
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":  # cgroup v2: "0::/path"
            quotas += [_quota_v2(d) for d in _self_and_parents(root, path)]
        elif "cpu" in controllers.split(","):
            for mount in V1_CPU_MOUNTS:
                if (root / mount).is_dir():
                    quotas += [_quota_v1(d) for d in _self_and_parents(root / mount, path)]
    quotas = [q for q in quotas if q is not None]
    return min(quotas) if quotas else None


def available_cpus(root: Path = CGROUP_ROOT, proc_cgroup: Path = PROC_CGROUP) -> int:
    """CPUs this process may run on: its affinity mask, capped by the cgroup quota (at least 1)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS and Windows have no affinity call
        cpus = os.cpu_count() or 1
    quota = cgroup_cpu_limit(root, proc_cgroup)
    if quota is not None:
        # floor: a thread beyond the quota gets throttled and stalls the others at the next barrier
        cpus = min(cpus, max(1, math.floor(quota)))
    return max(1, cpus)


def omp_num_threads() -> int | None:
    """``OMP_NUM_THREADS`` as a number (its first level when it is a nested list like "4,2"), None when unset."""
    text = os.environ.get("OMP_NUM_THREADS", "").strip()
    if not text:
        return None
    first = text.split(",")[0].strip()
    if not first.isdigit() or int(first) < 1:
        raise ValueError(f"OMP_NUM_THREADS={text!r} is not a positive integer: set it to one (e.g. "
                         "OMP_NUM_THREADS=2), or unset it to use every CPU this process may run on")
    return int(first)


def torch_threads(requested: int | None = None, root: Path = CGROUP_ROOT, proc_cgroup: Path = PROC_CGROUP) -> int:
    """Intra-op threads for torch: ``requested`` when given, else ``OMP_NUM_THREADS`` when set, else the
    available CPUs (affinity and cgroup quota)."""
    if requested is not None:
        if isinstance(requested, bool) or not isinstance(requested, int) or requested < 1:
            raise ValueError(f"threads={requested!r}: set threads to a positive integer, "
                             "or to null for automatic (CPU affinity, cgroup quota, OMP_NUM_THREADS)")
        return requested
    return omp_num_threads() or available_cpus(root, proc_cgroup)


def apply_threads(requested: int | None = None) -> int:
    """Set torch's intra-op threads to ``torch_threads(requested)``; returns the number set."""
    import torch

    n = torch_threads(requested)
    torch.set_num_threads(n)
    return n
