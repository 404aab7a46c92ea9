"""Slowdown on a busy machine (issue 17): a batch-4 EfficientNet-Lite0 forward and Score-CAM on one image
(layer ``head``, 1,280 masked passes at 224 px), idle vs beside one competing torch process that this script
starts (a plain conv loop with torch's default threads and OpenMP settings, like another user's job).

Idle and loaded are interleaved round by round (the competitor is paused with SIGSTOP for the idle half and
resumed with SIGCONT), so a slow spell of a shared machine hits both alike; each figure is the median over
rounds. The project's own settings are measured (``cnnvis`` imported: ``OMP_WAIT_POLICY=PASSIVE`` unless set,
threads from ``cnnvis.threads``); for reference a child process repeats the forward with
``OMP_WAIT_POLICY=ACTIVE``, the spin-waiting that made a loaded run 100x slower before (issue 17).

    python benchmarks/contention.py [--rounds 5] [--scorecam-rounds 2]

Headline lines last: ``name: value (target: ...)``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import time

TARGET_RATIO = 3.0
FORWARD_REPS = 10  # forwards per round and condition: one round's figure is their median
COMPETITOR = """
import sys, torch
x, w = torch.randn(8, 64, 56, 56), torch.randn(64, 64, 3, 3)
print("ready", torch.get_num_threads(), flush=True)
while True:
    torch.nn.functional.conv2d(x, w, padding=1)
"""


def start_competitor() -> subprocess.Popen:
    """A torch process with OpenMP's defaults (no cnnvis, no OMP_* variables), paused once it runs."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OMP_")}
    proc = subprocess.Popen([sys.executable, "-c", COMPETITOR], env=env, stdout=subprocess.PIPE, text=True)
    ready = proc.stdout.readline().split()
    if not ready or ready[0] != "ready":
        proc.kill()
        raise RuntimeError("the competing torch process did not start")
    os.kill(proc.pid, signal.SIGSTOP)
    return proc


def interleaved(fn, competitor_pid: int, rounds: int, reps: int) -> tuple[list[float], list[float]]:
    """(idle seconds, loaded seconds) per round, each the median of ``reps`` calls; one warm-up call first."""
    fn()
    idle, loaded = [], []
    for _ in range(rounds):
        for sig, times in ((signal.SIGSTOP, idle), (signal.SIGCONT, loaded)):
            os.kill(competitor_pid, sig)
            time.sleep(0.2)  # let the competitor's threads get going (or go to sleep)
            calls = []
            for _ in range(reps):
                start = time.perf_counter()
                fn()
                calls.append(time.perf_counter() - start)
            times.append(statistics.median(calls))
    os.kill(competitor_pid, signal.SIGSTOP)
    return idle, loaded


def workloads(forward_only: bool) -> dict:
    import numpy as np
    import skimage.data
    import torch
    from PIL import Image

    from cnnvis import cams
    from cnnvis.models import build_model

    model = build_model("efficientnet_lite0", pretrained=True).eval()
    photo = Image.fromarray(skimage.data.chelsea()).resize((224, 224), Image.BILINEAR)
    x = torch.from_numpy(np.array(photo)).permute(2, 0, 1)[None].float() / 255
    batch = x.repeat(4, 1, 1, 1)

    def forward():
        with torch.no_grad():
            model(batch)

    def scorecam():
        with cams.ScoreCAM(model, "head") as method:
            method.attribute(x, 281)

    return {"forward": forward} if forward_only else {"forward": forward, "scorecam": scorecam}


def measure(competitor_pid: int, rounds: int, scorecam_rounds: int, forward_only: bool) -> dict:
    """{workload: {idle_s, loaded_s, ratio, rounds}} with the medians over rounds."""
    import torch

    results = {}
    for name, fn in workloads(forward_only).items():
        n_rounds, reps = (rounds, FORWARD_REPS) if name == "forward" else (scorecam_rounds, 1)
        idle, loaded = interleaved(fn, competitor_pid, n_rounds, reps)
        results[name] = {"idle_s": statistics.median(idle), "loaded_s": statistics.median(loaded),
                         "ratio": statistics.median(loaded) / statistics.median(idle), "rounds": n_rounds,
                         "threads": torch.get_num_threads(), "wait_policy": os.environ.get("OMP_WAIT_POLICY")}
    return results


def spin_wait_reference(competitor_pid: int, rounds: int) -> dict:
    """The forward measured in a child process with OMP_WAIT_POLICY=ACTIVE (set before its torch loads)."""
    env = {**os.environ, "OMP_WAIT_POLICY": "ACTIVE"}
    out = subprocess.run([sys.executable, __file__, "--child", str(competitor_pid), "--rounds", str(rounds)],
                         env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def line(name: str, r: dict) -> str:
    return (f"{name:34s} idle {r['idle_s'] * 1e3:8.0f} ms  loaded {r['loaded_s'] * 1e3:8.0f} ms  "
            f"x{r['ratio']:.2f}  (median of {r['rounds']} rounds, {r['threads']} threads, "
            f"OMP_WAIT_POLICY={r['wait_policy']})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="idle/loaded rounds of the forward")
    parser.add_argument("--scorecam-rounds", type=int, default=2, help="idle/loaded rounds of Score-CAM")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)  # competitor pid: the reference run
    args = parser.parse_args()
    from cnnvis.threads import apply_threads

    apply_threads()  # what run.py does with threads=null
    if args.child:
        print(json.dumps(measure(args.child, args.rounds, 0, forward_only=True)["forward"]))
        return
    competitor = start_competitor()
    try:
        ours = measure(competitor.pid, args.rounds, args.scorecam_rounds, forward_only=False)
        reference = spin_wait_reference(competitor.pid, args.rounds)
    finally:
        os.kill(competitor.pid, signal.SIGCONT)
        competitor.kill()
        competitor.wait()
    print(f"one competing torch process beside us; {len(os.sched_getaffinity(0))} CPUs in our affinity mask")
    print(line("forward batch 4, spin-waiting", reference))
    print(line("forward batch 4", ours["forward"]))
    print(line("Score-CAM one image", ours["scorecam"]))
    print(f"forward_slowdown_spin_wait: {reference['ratio']:.2f}x (reference: OMP_WAIT_POLICY=ACTIVE)")
    print(f"forward_loaded_spin_wait_vs_ours: {reference['loaded_s'] / ours['forward']['loaded_s']:.2f}x "
          "(reference: the same load, spin-waiting vs our settings)")
    print(f"forward_slowdown_under_load: {ours['forward']['ratio']:.2f}x (target: <= {TARGET_RATIO:.0f}x)")
    print(f"scorecam_slowdown_under_load: {ours['scorecam']['ratio']:.2f}x (target: <= {TARGET_RATIO:.0f}x)")


if __name__ == "__main__":
    main()
