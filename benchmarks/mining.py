"""Top-k mining vs the plain forward pass over the same images, measured in one run.

    DATA_ROOT=/path/to/datasets python benchmarks/mining.py [--images 256] [--batch-size 32] [--repeats 3]

Target (issue 4): mining costs at most 1.2x the plain forward pass (same images, same batches, image
conversion included in both). Repeats alternate the two and the median of each is compared.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np
import torch

from cnnvis.config import DatasetConfig
from cnnvis.data import DatasetNotFoundError, ImageSet, load_images
from cnnvis.mining import top_activations
from cnnvis.models import build_model


def dataset(n: int) -> ImageSet:
    cfg = DatasetConfig(name="imagenet_val", root=os.environ.get("DATA_ROOT", "data"), subdir="imagenet-val-1300",
                        max_images=n)
    try:
        return load_images(cfg, 224)
    except DatasetNotFoundError as err:
        print(f"imagenet_val not found ({err}); timing random images instead")
        rng = np.random.default_rng(0)
        return ImageSet("random", rng.integers(0, 255, (n, 256, 256, 3), dtype=np.uint8), np.zeros(n, dtype=np.int64),
                        ["-"], [""] * n, np.full((n, 2), 256))


@torch.no_grad()
def plain_forward(model, images: ImageSet, batch_size: int) -> None:
    for start in range(0, len(images), batch_size):
        model(images.tensors(list(range(start, min(start + batch_size, len(images)))), 224))


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.manual_seed(0)
    images = dataset(args.images)
    cases = [
        ("efficientnet_lite0", build_model("efficientnet_lite0", pretrained=True).eval(), [f"stage{i}" for i in range(1, 8)]),
        ("zfnet", build_model("zfnet").eval(), [f"conv{i}" for i in range(1, 6)]),
    ]
    print(f"{len(images)} {images.name} images at 224 px, batch {args.batch_size}, {torch.get_num_threads()} threads, "
          f"median of {args.repeats}")
    headlines = []
    for name, model, layers in cases:
        plain_forward(model, images.subset(range(args.batch_size)), args.batch_size)  # warm-up
        fwd, mine = [], []
        for _ in range(args.repeats):
            fwd.append(timed(lambda: plain_forward(model, images, args.batch_size)))
            mine.append(timed(lambda: top_activations(model, images, layers, k=9, batch_size=args.batch_size,
                                                      progress=False)))
        f, m = statistics.median(fwd), statistics.median(mine)
        print(f"{name}: plain forward {f:.2f} s ({len(images) / f:.1f} img/s), mining {'/'.join(layers)} top-9 "
              f"{m:.2f} s ({len(images) / m:.1f} img/s)")
        headlines.append(f"mining_vs_forward_{name}: {m / f:.2f}x (target: <= 1.2x)")
    for line in headlines:
        print(line)


if __name__ == "__main__":
    main()
