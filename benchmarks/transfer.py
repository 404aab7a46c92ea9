"""The pretrained part of Zeiler & Fergus Table 4 (Caltech-101, 15 and 30 images per class x 5 folds,
EfficientNet-Lite0 features + softmax) from a cold cache: decoding, feature extraction, classifiers.

    DATA_ROOT=/path/to/datasets python benchmarks/transfer.py [--classes N] [--threads 2]

``--classes N`` runs on the last N classes only (a quick check, not Table 4's scores); the headline
target is for all 101 classes, 8,677 images. The baseline is the same
pipeline again with the warm cache, measured in the same run.
"""

import argparse
import os
import tempfile
import time

import numpy as np
import torch
from omegaconf import OmegaConf

from cnnvis.config import DatasetConfig
from cnnvis.data import decode_to_cache, index_dataset
from cnnvis.models import build_model
from cnnvis.transfer import extract_features, fold_accuracies


def table4_pretrained(images, cache, C=0.01):
    timings, start = {}, time.perf_counter()
    model = build_model("efficientnet_lite0", pretrained=True).eval()
    feats = extract_features(model, images, "head", 224, cache, tag="efficientnet_lite0", timings=timings)["head"]
    scores = {n: fold_accuracies(feats, images.labels, n, 50, 5, "softmax", C) for n in (15, 30)}
    return time.perf_counter() - start, timings.get("extract_s", 0.0), scores


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--classes", type=int, default=None, help="only the last N classes (a quick check)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cfg = OmegaConf.merge(OmegaConf.structured(DatasetConfig),
                          {"name": "caltech101", "root": os.environ.get("DATA_ROOT", "data")})
    index = index_dataset(cfg)
    if args.classes:
        index = index.select(np.flatnonzero(index.labels >= len(index.classes) - args.classes))
    with tempfile.TemporaryDirectory() as cache:
        start = time.perf_counter()
        images = decode_to_cache(index, 256, "crop", cache, cfg.num_workers)
        decode_s = time.perf_counter() - start
        cold_s, extract_s, scores = table4_pretrained(images, cache)
        warm_s, _, warm_scores = table4_pretrained(images, cache)
    assert all(np.allclose(scores[n], warm_scores[n]) for n in scores)  # the cache changes time, not results
    total = decode_s + cold_s
    print(f"images: {len(images)}, torch threads: {torch.get_num_threads()}, cpu count: {os.cpu_count()}, "
          f"load average (1 min): {os.getloadavg()[0]:.1f}")
    print(f"decode to the image cache: {decode_s:.1f} s")
    print(f"feature extraction: {extract_s:.1f} s ({1000 * extract_s / len(images):.1f} ms/image)")
    print(f"classifiers (2 settings x 5 folds): {cold_s - extract_s:.1f} s")
    for n, s in scores.items():
        print(f"accuracy {n}/class: {100 * np.mean(s):.1f} ± {100 * np.std(s, ddof=1):.1f}")
    print(f"warm-cache rerun (baseline): {warm_s:.1f} s")
    print(f"cold_cache_over_warm_cache: {total / warm_s:.2f} x (target: > 1, the cache pays)")
    print(f"extraction_share_of_cold_run: {extract_s / total:.2f} (target: the dominant part)")
    print(f"table4_pretrained_cold_cache_s: {total:.1f} (target: < 600 s on 2 idle CPU cores, all 8677 images)")


if __name__ == "__main__":
    main()
