"""Zeiler & Fergus 2013 Table 7: a linear SVM and a softmax on the features of each layer of an ImageNet
network, Caltech-101 at 30 images per class (Caltech-256 at 60 when present): accuracy grows with depth.

Each layer's maps are average-pooled over the whole image (``grid: 1``; ``grid: g`` pools over g x g cells),
extracted once per (backbone, layer, dataset, transform) and cached; the paper's rows (ZFNet layers 1-7)
sit beside ours at their relative depth.
"""

import logging
import time
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import pandas as pd

from cnnvis.config import ExperimentConfig
from cnnvis.plotting.transfer import accuracy_vs_depth
from cnnvis.models import resolve_layers
from cnnvis.runner import model_from_config
from cnnvis.transfer import extract_features, fold_accuracies, load_datasets, mean_std

log = logging.getLogger(__name__)

# Zeiler & Fergus 2013, Table 7: (classifier, ZFNet layer) -> Caltech-101 (30/class), Caltech-256 (60/class), %.
PAPER = {
    ("svm", 1): ((44.8, 0.7), (24.6, 0.4)),
    ("svm", 2): ((66.2, 0.5), (39.6, 0.3)),
    ("svm", 3): ((72.3, 0.4), (46.0, 0.3)),
    ("svm", 4): ((76.6, 0.4), (51.3, 0.1)),
    ("svm", 5): ((86.2, 0.8), (65.6, 0.3)),
    ("svm", 7): ((85.5, 0.4), (71.7, 0.2)),
    ("softmax", 5): ((82.9, 0.4), (65.7, 0.5)),
    ("softmax", 7): ((85.4, 0.4), (72.6, 0.1)),
}
PAPER_COLUMN = {"caltech101": 0, "caltech256": 1}
ZFNET_DEPTH = 7  # conv1-conv5, fc6, fc7


@dataclass
class Config(ExperimentConfig):
    datasets: list[str] = field(default_factory=lambda: ["caltech101", "caltech256"])
    train_per_class: dict[str, int] = field(default_factory=lambda: {"caltech101": 30, "caltech256": 60})
    test_per_class: int = 50
    folds: int = 5
    layers: Optional[list[str]] = None  # None: every stage of the model, input to output (its "stages" role)
    classifiers: list[str] = field(default_factory=lambda: ["svm", "softmax"])
    C_svm: float = 0.001  # on standardized features (linear kernel)
    C_softmax: float = 0.01
    grid: int = 1  # average pooling over grid x grid cells of each map (1: global average)
    batch_size: int = 16


def paper_rows(names):
    rows = []
    for (kind, layer), values in PAPER.items():
        row = {"source": "paper (ZFNet)", "layer": f"{kind.upper() if kind == 'svm' else 'Softmax'} ({layer})",
               "depth": round(layer / ZFNET_DEPTH, 3), "dims": "-", "classifier": kind}
        for name in names:
            ref = values[PAPER_COLUMN[name]] if name in PAPER_COLUMN else None
            row[name] = f"{ref[0]} ± {ref[1]}" if ref else "-"
        rows.append(row)
    return rows


def main(cfg, out):
    e = cfg.experiment
    names = list(e.datasets)
    all_images = load_datasets(cfg.dataset, names, cfg.model.input_size, cfg.cache_dir, cfg.smoke)  # before writing
    model = model_from_config(cfg)
    layers = resolve_layers(model, e.layers, "stages", "experiment.layers")
    weights = model.weights_source
    folds = 2 if cfg.smoke else e.folds
    C = {"svm": e.C_svm, "softmax": e.C_softmax}
    start, timings, results, per_fold = time.perf_counter(), {}, {}, []
    for name in names:
        images = all_images[name]
        if images is None:
            continue
        n = 2 if cfg.smoke else e.train_per_class[name]
        feats = extract_features(model, images, layers, cfg.model.input_size, cfg.cache_dir, tag=cfg.model.name,
                                 grid=e.grid, batch_size=e.batch_size, timings=timings)
        for layer in layers:
            for kind in e.classifiers:
                scores = fold_accuracies(feats[layer], images.labels, n, e.test_per_class, folds, kind, C[kind], cfg.seed)
                results[name, layer, kind] = scores
                per_fold += [{"dataset": name, "layer": layer, "classifier": kind, "train_per_class": n, "fold": k,
                              "accuracy": s} for k, s in enumerate(scores)]
                log.info("%s %s %s: %s", name, layer, kind, mean_std(scores))
        dims = {layer: feats[layer].shape[1] for layer in layers}

    rows = []
    for kind in e.classifiers:
        for depth, layer in enumerate(layers, start=1):
            row = {"source": f"ours ({cfg.model.name}, {weights})", "layer": f"{layer}", "depth": round(depth / len(layers), 3),
                   "dims": dims[layer], "classifier": kind}
            for name in names:
                row[name] = mean_std(results[name, layer, kind]) if (name, layer, kind) in results else "not run: data absent"
            rows.append(row)
    table = pd.DataFrame(rows + paper_rows(names))
    sizes = ", ".join(f"{name} at {2 if cfg.smoke else e.train_per_class[name]}/class" for name in names)
    out.table(table, "table7_layer_features", title="Zeiler & Fergus Table 7: classifiers on the features of each layer",
              notes=(f"Mean of per-class accuracies (%) over {folds} folds (mean ± sample std), {sizes}, tested on up "
                     f"to {e.test_per_class} other images per class. Features: each layer's output at "
                     f"{cfg.model.input_size} px (center crop), average-pooled over {e.grid}x{e.grid} cells, "
                     f"standardized; SVM = linear SVM (libsvm, one-vs-one, C={e.C_svm}); Softmax = multinomial "
                     f"logistic regression (C={e.C_softmax}); both C chosen by 3-fold cross-validation on fold 0's training images of the last layer (SVM: 1e-4/1e-3/1e-2/0.1 gave 87.5/90.7/90.6/90.6 %; softmax 0.01/0.1: 91.1/91.0 %). 'depth' = layer index / number of layers, so the "
                     f"paper's ZFNet layers (1-5 conv, 7 = fc7) and ours line up in the figure. The paper "
                     f"classified layer outputs of ZFNet; ours are the stages of {cfg.model.name}, whose early "
                     f"stages have few channels (16-40), so global pooling leaves them fewer dimensions than "
                     f"ZFNet's layers had." + (" SMOKE RUN." if cfg.smoke else "")))
    out.table(pd.DataFrame(per_fold), "folds", title="Accuracy of every fold")
    curves = {}
    for name in names:
        for kind in e.classifiers:
            scores = [results.get((name, layer, kind)) for layer in layers]
            if all(s is not None for s in scores):
                curves[f"ours {name}: {kind}"] = (np.arange(1, len(layers) + 1) / len(layers),
                                                  [100 * np.mean(s) for s in scores],
                                                  [100 * np.std(s, ddof=1) if len(s) > 1 else 0 for s in scores])
            points = [(layer / ZFNET_DEPTH, *PAPER[kind, layer][PAPER_COLUMN[name]]) for k, layer in PAPER
                      if k == kind and name in PAPER_COLUMN]
            if points:
                curves[f"paper (ZFNet) {name}: {kind}"] = tuple(np.asarray(points).T)
    out.figure(accuracy_vs_depth(curves, f"Accuracy vs depth: {cfg.model.name} features ({weights})"), "accuracy_vs_depth")
    metrics = {f"{name}_{layer}_{kind}": round(100 * float(np.mean(s)), 2) for (name, layer, kind), s in results.items()}
    metrics["feature_extraction_s"] = round(timings.get("extract_s", 0.0), 1)
    metrics["total_s"] = round(time.perf_counter() - start, 1)
    return metrics
