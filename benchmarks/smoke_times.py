"""Wall and CPU time of every experiment's ``smoke=true`` run (issue 17: each within 60 s on an idle 2-core
machine). Each runs as a user runs it, ``python run.py experiment=<name> smoke=true``, writing to a temporary
results_dir; on a shared machine the CPU time (user + system of the child) says more than the wall time about
what an idle machine would take.

    python benchmarks/smoke_times.py [--only cam_methods filters] [--timeout 600]

Run with DATA_ROOT set: experiments that need the real data fall back (or fail clearly) without it.
Headline line last: ``slowest_smoke: <name> <s> (target: <= 60 s)``.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TARGET_S = 60.0
# zfnet_evolution reads train's checkpoints: train goes first
FIRST = ["train"]


def experiment_names() -> list[str]:
    names = sorted(p.stem for p in (REPO / "conf" / "experiment").glob("*.yaml"))
    return FIRST + [n for n in names if n not in FIRST]


def children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def time_smoke(name: str, tmp: str, timeout: float) -> tuple[float, float, int, str]:
    """(wall s, CPU s, exit code, last stderr line) of one smoke run writing under ``tmp``."""
    # checkpoints in the temporary folder too: a cold run (nothing resumed) that leaves nothing behind
    env = {**os.environ, "CNNVIS_CHECKPOINTS": f"{tmp}/checkpoints"}
    cpu0, start = children_cpu_s(), time.perf_counter()
    try:
        proc = subprocess.run([sys.executable, "run.py", f"experiment={name}", "smoke=true", f"results_dir={tmp}"],
                              cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
        code, err = proc.returncode, (proc.stderr.strip().splitlines() or [""])[-1]
    except subprocess.TimeoutExpired:
        code, err = -1, f"killed after {timeout:.0f} s"
    return time.perf_counter() - start, children_cpu_s() - cpu0, code, err


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", help="experiment names (default: every conf/experiment/*.yaml)")
    parser.add_argument("--timeout", type=float, default=600, help="seconds before a run is killed")
    args = parser.parse_args()
    names = args.only or experiment_names()
    print(f"smoke runs of {len(names)} experiments, DATA_ROOT={os.environ.get('DATA_ROOT', '(unset)')}, "
          f"{len(os.sched_getaffinity(0))} CPUs", flush=True)
    times, cpu_times = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            wall, cpu, code, err = time_smoke(name, tmp, args.timeout)
            times[name], cpu_times[name] = wall, cpu
            status = "ok" if code == 0 else f"FAILED ({code}): {err}"
            print(f"{name:24s} wall {wall:7.1f} s  cpu {cpu:7.1f} s  {status}", flush=True)
    by_cpu = max(cpu_times, key=cpu_times.get)
    print(f"slowest_smoke_cpu: {by_cpu} {cpu_times[by_cpu]:.1f} s (reference: CPU time, what an idle machine "
          "would take on one core; wall time counts every other job on a shared machine)")
    slowest = max(times, key=times.get)
    print(f"slowest_smoke: {slowest} {times[slowest]:.1f} s (target: <= {TARGET_S:.0f} s)")


if __name__ == "__main__":
    main()
