"""Sharded dataset-level analyses (issue 28), measured on this machine: top-k mining's throughput as 1 process x 2
threads against 2 processes x 1 thread (one shard each), the merge's cost, streamed mining's peak memory against the
dataset's size, and the scaling model they give: time = per-image cost x images / workers + merge.

    DATA_ROOT=/path/to/datasets python benchmarks/scale.py [--images 96] [--input-size 112] [--batch-size 16]
        [--per-image-s SECONDS] [--target-images 50000]

Targets: 2 processes x 1 thread at least 0.9x the throughput of 1 process x 2 threads (shards share nothing, so a
process per core loses nothing to threading); the merge of 8 shards under 1 % of mining ``--target-images`` on 8
workers (its cost grows with the shards, not the images); peak memory of streamed
mining over Caltech-101's 8,677 images at most 1.1x that over imagenet-val-1300's 1,300 (flat beyond the batch).
``--per-image-s``: a per-image cost measured elsewhere (one GPU) for the model's predictions; default: this
machine's. Each measurement runs in processes of its own (``--worker``), so peak memory is that process's alone.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from cnnvis.config import DatasetConfig
from cnnvis.data import ImageFiles, index_dataset
from cnnvis.shards import ShardPlan, arrays_to_frame, concat_arrays, frame_to_arrays

LAYERS = [f"conv{i}" for i in range(1, 6)]
DATASETS = {"imagenet_val": "imagenet-val-1300", "caltech101": ""}


def streamed(dataset: str, images: int | None, side: int, num_workers: int) -> ImageFiles:
    index = index_dataset(DatasetConfig(name=dataset, root=os.environ.get("DATA_ROOT", "data"),
                                        subdir=DATASETS[dataset]))
    if images:  # 0: all
        index = index.select(np.arange(min(images, len(index.paths))))
    return ImageFiles(index.name, index.paths, index.labels, index.classes, side, "crop", num_workers)


def worker(args) -> None:
    """One process: mine its shard of the streamed images, print seconds and peak memory (this process, and the
    largest of its DataLoader workers) as JSON."""
    import torch

    from cnnvis.mining import top_activations
    from cnnvis.models import build_model

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = build_model("zfnet", input_size=args.input_size).eval()
    images = streamed(args.dataset, args.images, round(args.input_size * 256 / 224), args.num_workers)
    plan = ShardPlan(args.count, [args.shard], Path(args.folder), merges=False, fingerprint="benchmark")
    start = time.perf_counter()
    top_activations(model, images, LAYERS, k=9, batch_size=args.batch_size, progress=False, plan=plan)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    workers = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(json.dumps({"seconds": seconds, "images": len(images), "peak_mib": peak, "worker_peak_mib": workers}))


def launch(args, folder, dataset, images, count, shards, threads, num_workers) -> list[dict]:
    """Run ``shards`` of a ``count``-shard mining plan at once, a process each; their JSON reports."""
    base = [sys.executable, __file__, "--worker", "--folder", str(folder), "--dataset", dataset, "--count", str(count),
            "--threads", str(threads), "--num-workers", str(num_workers), "--input-size", str(args.input_size),
            "--batch-size", str(args.batch_size), "--images", str(images)]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    procs = [subprocess.Popen(base + ["--shard", str(s)], stdout=subprocess.PIPE, text=True, env=env) for s in shards]
    outs = [p.communicate()[0] for p in procs]
    if any(p.returncode for p in procs):
        raise SystemExit(f"a worker failed: {outs}")
    return [json.loads(o.strip().splitlines()[-1]) for o in outs]


def merge_seconds(args, folder: Path, count: int) -> float:
    """The merge step of a ``count``-shard mining plan in ``folder``: load the shard files, merge the top-k lists."""
    import torch

    from cnnvis.mining import top_activations
    from cnnvis.models import build_model

    model = build_model("zfnet", input_size=args.input_size).eval()
    images = streamed("imagenet_val", args.images, round(args.input_size * 256 / 224), 0)
    plan = ShardPlan(count, [], folder, fingerprint="benchmark")  # shards.merge_only: no image is read
    start = time.perf_counter()
    with torch.no_grad():
        top_activations(model, images, LAYERS, k=9, batch_size=args.batch_size, progress=False, plan=plan)
    return time.perf_counter() - start


def table_merge_seconds(rows: int, shards: int) -> float:
    """Concatenating a per-image table of ``rows`` images (the occlusion statistics' 12 columns) from ``shards``."""
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({f"m{i}": rng.random(rows) for i in range(11)} | {"category": ["x"] * rows})
    parts = [frame_to_arrays(frame.iloc[s::shards]) for s in range(shards)]
    start = time.perf_counter()
    arrays_to_frame(concat_arrays(parts))
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=96)  # for the throughput runs (a worker: 0 = all)
    parser.add_argument("--input-size", type=int, default=112)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--per-image-s", type=float, default=None)
    parser.add_argument("--target-images", type=int, default=50_000)  # the ImageNet validation set the papers mine
    parser.add_argument("--worker", action="store_true")
    parser.add_argument("--dataset", default="imagenet_val")
    parser.add_argument("--folder")
    parser.add_argument("--count", type=int, default=1)
    parser.add_argument("--shard", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--num-workers", type=int, default=0)
    args = parser.parse_args()
    if args.worker:
        return worker(args)
    with tempfile.TemporaryDirectory() as tmp:
        one = launch(args, Path(tmp) / "one", "imagenet_val", args.images, 1, [0], threads=2, num_workers=0)[0]
        two = launch(args, Path(tmp) / "two", "imagenet_val", args.images, 2, [0, 1], threads=1, num_workers=0)
        merge = merge_seconds(args, Path(tmp) / "two", 2)
        small = launch(args, Path(tmp) / "small", "imagenet_val", 0, 1, [0], threads=1, num_workers=2)[0]
        large = launch(args, Path(tmp) / "large", "caltech101", 0, 1, [0], threads=1, num_workers=2)[0]
    rate_one = one["images"] / one["seconds"]
    rate_two = args.images / max(r["seconds"] for r in two)
    per_image = args.per_image_s or max(r["seconds"] / r["images"] for r in two)  # one process on one core
    side = round(args.input_size * 256 / 224)
    print(f"images mined: {args.images} imagenet-val-1300 images, zfnet conv1-conv5 at {args.input_size} px, "
          f"batches of {args.batch_size}")
    print(f"1 process x 2 threads: {rate_one:.2f} images/s")
    print(f"2 processes x 1 thread (a shard each): {rate_two:.2f} images/s (target: >= {0.9 * rate_one:.2f}, "
          f"0.9x the above)")
    # the merge reads k entries per channel and shard, whatever the images: its share falls as the images grow
    sharded = per_image * args.target_images / 8
    print(f"merge of the 2 mining shards: {merge * 1000:.1f} ms; 8 shards' merge = {100 * 4 * merge / sharded:.3f} % of "
          f"mining {args.target_images} images on 8 workers (target: < 1 %)")
    print(f"per-image table merge, {args.target_images} images from 8 shards: "
          f"{1000 * table_merge_seconds(args.target_images, 8):.1f} ms")
    for name, run in (("imagenet-val-1300", small), ("caltech101", large)):
        print(f"streamed mining of {run['images']} {name} images: peak {run['peak_mib']:.0f} MiB (process), "
              f"{run['worker_peak_mib']:.0f} MiB (largest decoding worker); decoded into memory they would hold "
              f"{run['images'] * side * side * 3 / 2 ** 20:.0f} MiB")
    print(f"scaling model: time = {per_image * 1000:.1f} ms/image ({'given' if args.per_image_s else 'measured, one core'}"
          f") x images / workers + merge ({merge:.3f} s measured for 2 shards)")
    for workers in (1, 2, 4, 8):
        print(f"  {args.target_images} images on {workers} worker(s) (GPUs or cores): "
              f"{per_image * args.target_images / workers / 60 + merge * workers / 2 / 60:.1f} min")
    ratio = large["peak_mib"] / small["peak_mib"]
    print(f"peak memory, {large['images']} vs {small['images']} images: {ratio:.2f}x (target: <= 1.10x); "
          f"2x1 / 1x2 throughput: {rate_two / rate_one:.2f}x (target: >= 0.90x)")


if __name__ == "__main__":
    main()
