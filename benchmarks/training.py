"""Training speed: images per second through the real data pipeline vs the same model on tensors in memory.

The pipeline is the trainer's: cached uint8 images -> ImageTensors (random crop + flip) -> SeededSamples ->
EpochSampler -> DataLoader workers. The baseline trains the same model, same steps, on batches already
cropped and held in memory. Both are measured in this run, alternating, and the best of the repeats kept
(the machine is shared). Real Caltech-101 images when DATA_ROOT has them, else synthetic images of the same
size through the same code. Defaults are the CPU preset's (conf/preset/zfnet_cpu.yaml): an epoch of 25 steps and
no loader workers; the images come decoded from the cache, so on 2 cores workers only take time from the
compute threads (measured here: 12.5% cost with 2 workers, 3% with none).

    python benchmarks/training.py [--size 112] [--batch 32] [--steps 25] [--workers 0] [--repeats 2]
"""

import argparse
import os
import time

import numpy as np
import torch
from torch.nn import functional as F
from torch.utils.data import DataLoader

from cnnvis.data import ImageSet, ImageTensors, decode_to_cache, index_dataset
from cnnvis.models import zfnet
from cnnvis.training import EpochSampler, SeededSamples, renormalize_filters_


def images(n: int, side: int) -> tuple[ImageSet, str]:
    root = os.environ.get("DATA_ROOT", "data")
    try:
        from types import SimpleNamespace

        cfg = SimpleNamespace(name="caltech101", root=root, download=False, include_background=False)
        index = index_dataset(cfg)
        pick = np.random.default_rng(0).choice(len(index.paths), n, replace=False)
        return decode_to_cache(index.select(np.sort(pick)), side, "crop", "data/cache"), "Caltech-101"
    except FileNotFoundError:
        rng = np.random.default_rng(0)
        arr = rng.integers(0, 256, (n, side, side, 3), dtype=np.uint8)
        return ImageSet("synthetic", arr, np.arange(n) % 10, [str(c) for c in range(10)], [""] * n,
                        np.full((n, 2), side)), "synthetic"


def step(model, opt, x, y):
    loss = F.cross_entropy(model(x), y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    renormalize_filters_(model, 0.1)


def timed_pipeline(model, opt, data, batch, steps, workers, epoch):
    sampler = EpochSampler(len(data), 0, epoch)
    loader = DataLoader(SeededSamples(data, 0), batch_size=batch, sampler=sampler, num_workers=workers,
                        generator=torch.Generator().manual_seed(epoch))
    start = time.perf_counter()  # includes starting the workers, as every epoch of fit does
    for i, (x, y) in enumerate(loader):
        step(model, opt, x, y)
        if i + 1 == steps:
            break
    return steps * batch / (time.perf_counter() - start)


def timed_memory(model, opt, batches, steps):
    start = time.perf_counter()
    for i in range(steps):
        x, y = batches[i % len(batches)]
        step(model, opt, x, y)
    return steps * batch_size(batches) / (time.perf_counter() - start)


def batch_size(batches):
    return len(batches[0][1])


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--size", type=int, default=112)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=25)
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--repeats", type=int, default=2)
    a = p.parse_args()
    imgs, source = images(a.batch * a.steps, round(a.size * 256 / 224))
    data = ImageTensors(imgs, range(len(imgs)), a.size, train=True)
    torch.manual_seed(0)
    model = zfnet(len(imgs.classes), a.size)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    batches = [(torch.stack([data[i][0] for i in range(b * a.batch, (b + 1) * a.batch)]),
                torch.tensor([data[i][1] for i in range(b * a.batch, (b + 1) * a.batch)])) for b in range(2)]
    step(model, opt, *batches[0])  # warm-up
    pipeline, memory = [], []
    for r in range(a.repeats):
        pipeline.append(timed_pipeline(model, opt, data, a.batch, a.steps, a.workers, r))
        memory.append(timed_memory(model, opt, batches, a.steps))
        print(f"repeat {r}: pipeline {pipeline[-1]:.1f} img/s, in memory {memory[-1]:.1f} img/s", flush=True)
    best_p, best_m = max(pipeline), max(memory)
    print(f"ZFNet {a.size} px, batch {a.batch}, {a.steps} steps x {a.repeats} repeats, {a.workers} workers, "
          f"{torch.get_num_threads()} threads, {source} images, device cpu")
    print(f"pipeline_images_per_s: {best_p:.1f}")
    print(f"in_memory_images_per_s: {best_m:.1f}")
    print(f"pipeline_cost: {100 * (1 - best_p / best_m):.1f}% (target: <= 10%)")


if __name__ == "__main__":
    main()
