"""Zeiler & Fergus 2013 Table 7: a linear SVM and a softmax on the features of each layer of an ImageNet
network, Caltech-101 at 30 images per class (Caltech-256 at 60 when present): accuracy grows with depth.

Each layer's maps are average-pooled over a grid of cells chosen per layer so that it keeps about
``features_per_layer`` numbers (the paper's SVM saw the whole layer; global pooling would leave early layers
16-40 numbers), extracted once per (backbone, layer, dataset, transform) and cached. C is chosen per fold,
layer and classifier by cross-validation on that fold's training images only. The paper's rows (ZFNet layers
1-7) sit beside ours at their relative depth. The claim (``cnnvis.transfer.depth_claim``) is a trend over every
layer, beside a random-weights control: the same layers of the same architecture randomly initialized (the SVM only,
by default, for its cost).
"""

import logging
import time
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import pandas as pd

from cnnvis.claims import with_control
from cnnvis.config import ExperimentConfig
from cnnvis.from_config import model_from_config
from cnnvis.notes import smoke_note
from cnnvis.plotting.transfer import accuracy_vs_depth
from cnnvis.models import CNN, resolve_layers
from cnnvis.transfer import (TABLE7, TABLE7_COLUMN, depth_claim, extract_features, fold_estimate, grid_edges,
                             layer_accuracies, load_datasets, random_twin)

log = logging.getLogger(__name__)

ZFNET_DEPTH = 7  # conv1-conv5, fc6, fc7


MODEL_KINDS = [CNN]  # the networks it runs (cnnvis.config.check_model_kind)


@dataclass
class Config(ExperimentConfig):
    datasets: list[str] = field(default_factory=lambda: ["caltech101", "caltech256"])
    train_per_class: dict[str, int] = field(default_factory=lambda: {"caltech101": 30, "caltech256": 60})
    test_per_class: int = 50
    folds: int = 5
    layers: Optional[list[str]] = None  # None: every stage of the model, input to output (its "stages" role)
    classifiers: list[str] = field(default_factory=lambda: ["svm", "softmax"])
    C_grid_svm: list[float] = field(default_factory=lambda: [0.0001, 0.001, 0.01, 0.1])  # on standardized features
    C_grid_softmax: list[float] = field(default_factory=lambda: [0.001, 0.01, 0.1, 1.0])
    cv: int = 2  # cross-validation folds within each fold's training images, to choose C
    features_per_layer: int = 3000  # pool each map to the grid whose channels x cells come nearest this
    batch_size: int = 16
    control_folds: int = 3  # the random-weights control: the same layers of a random-init trunk (0: not run)
    control_classifiers: list[str] = field(default_factory=lambda: ["svm"])  # the softmax's fits dominate the cost


def paper_rows(names):
    rows = []
    for (kind, layer), values in TABLE7.items():
        row = {"source": "paper (ZFNet)", "layer": f"{kind.upper() if kind == 'svm' else 'Softmax'} ({layer})",
               "depth": round(layer / ZFNET_DEPTH, 3), "dims": "-", "classifier": kind}
        for name in names:
            ref = values[TABLE7_COLUMN[name]] if name in TABLE7_COLUMN else None
            row[name] = f"{ref[0]} ± {ref[1]}" if ref else "-"
        rows.append(row)
    return rows


def our_rows(source: str, results: dict, chosen: dict, names, layers, kinds, dims) -> list[dict]:
    rows = []
    for kind in kinds:
        for depth, layer in enumerate(layers, start=1):
            row = {"source": source, "layer": layer, "depth": round(depth / len(layers), 3), "dims": dims.get(layer, "-"),
                   "classifier": kind}
            for name in names:
                ran = (name, layer, kind) in results
                row[name] = fold_estimate(results[name, layer, kind]) if ran else "not run: data absent"
                row[f"{name} C per fold"] = ", ".join(f"{C:g}" for C in chosen[name, layer, kind]) if ran else "-"
            rows.append(row)
    return rows


def depth_claims(results: dict, names, layers, kinds) -> list:
    return [depth_claim(name, kind, [results[name, layer, kind] for layer in layers], layers) for name in names
            for kind in kinds if (name, layers[0], kind) in results and len(layers) > 1 and name in TABLE7_COLUMN]


def main(cfg, out, record):
    e = cfg.experiment
    names = list(e.datasets)
    all_images = load_datasets(cfg.dataset, names, cfg.model.input_size, cfg.cache_dir, cfg.smoke,
                               record)  # before writing
    model = model_from_config(cfg, record)
    layers = resolve_layers(model, e.layers, "stages", "experiment.layers")
    weights = model.weights_source
    folds = 2 if cfg.smoke else e.folds
    C_grid = {"svm": list(e.C_grid_svm), "softmax": list(e.C_grid_softmax)}
    random_trunk = random_twin(model, cfg.model.name, cfg.model.input_size, cfg.seed)
    arms = {"trained": (model, cfg.model.name, list(e.classifiers), folds),
            "control": (random_trunk, f"{cfg.model.name}-random", list(e.control_classifiers), min(e.control_folds, folds))}
    start, timings, per_fold, dims = time.perf_counter(), {}, [], {}
    results, chosen = {arm: {} for arm in arms}, {arm: {} for arm in arms}
    for name in names:
        images = all_images[name]
        if images is None:
            continue
        n = 2 if cfg.smoke else e.train_per_class[name]
        for arm, (net, tag, kinds, k) in arms.items():
            if not k or not kinds:
                continue
            feats = extract_features(net, images, layers, cfg.model.input_size, cfg.cache_dir, tag=tag,
                                     batch_size=e.batch_size, timings=timings, target_features=e.features_per_layer)
            dims.update({layer: f.shape[1] for layer, f in feats.items()})
            for (layer, kind), runs in layer_accuracies(feats, images.labels, kinds, n, e.test_per_class, k, C_grid,
                                                        e.cv, cfg.seed).items():
                results[arm][name, layer, kind] = [acc for acc, _ in runs]
                chosen[arm][name, layer, kind] = [C for _, C in runs]
                per_fold += [{"weights": arm, "dataset": name, "layer": layer, "classifier": kind,
                              "train_per_class": n, "fold": f, "C": C, "accuracy": acc} for f, (acc, C) in enumerate(runs)]
                log.info("%s %s %s %s: %s (C per fold %s)", arm, name, layer, kind,
                         fold_estimate(results[arm][name, layer, kind]), chosen[arm][name, layer, kind])

    rows = our_rows(f"ours ({cfg.model.name}, {weights})", results["trained"], chosen["trained"], names, layers,
                    e.classifiers, dims)
    control_rows = our_rows(f"random-weights control ({cfg.model.name}, random init, seed {cfg.seed})",
                            results["control"], chosen["control"], names, layers, e.control_classifiers, dims)
    table = pd.DataFrame(rows + (control_rows if results["control"] else []) + paper_rows(names))
    sizes = ", ".join(f"{name} at {2 if cfg.smoke else e.train_per_class[name]}/class" for name in names)
    grids = ", ".join(f"{kind} {C_grid[kind]}" for kind in e.classifiers)
    edges = grid_edges(chosen["trained"], C_grid)
    control_text = (f" Random-weights control: the same layers of {cfg.model.name} randomly initialized "
                    f"(cnnvis.transfer.random_twin, seed {cfg.seed}), {', '.join(e.control_classifiers)} "
                    f"only, {arms['control'][3]} folds (cost)." if results["control"] else "")
    out.table(table, "table7_layer_features", title="Zeiler & Fergus Table 7: classifiers on the features of each layer",
              notes=(f"Mean of per-class accuracies (%) over {folds} folds with its 95 % t interval (n = folds), "
                     f"{sizes}, tested on up to {e.test_per_class} other images per class (the paper's column: mean "
                     f"± std over 5 folds). Features: each layer's output at {cfg.model.input_size} px (center crop), "
                     f"average-pooled over the g x g grid whose channels x g x g comes nearest "
                     f"{e.features_per_layer} (g at most the map's side; 'dims' is what each layer kept), "
                     f"standardized; SVM = linear SVM (libsvm, one-vs-one); Softmax = multinomial logistic regression. "
                     f"C is chosen per fold, layer and classifier by {e.cv}-fold stratified cross-validation on that "
                     f"fold's training images only (ties to the smaller C), among {grids}; the chosen Cs are in the "
                     f"table and in `folds`{edges}. 'depth' = layer index / number of layers, so the paper's ZFNet layers "
                     f"(1-5 conv, 7 = fc7) and ours line up in the figure. The paper classified layer outputs of "
                     f"ZFNet; ours are the stages of {cfg.model.name}." + control_text + smoke_note(cfg.smoke)))
    out.table(pd.DataFrame(per_fold), "folds", title="Accuracy and chosen C of every fold")
    claims = depth_claims(results["trained"], names, layers, e.classifiers)
    if claims:
        control = depth_claims(results["control"], names, layers, e.control_classifiers) or None
        why_none = (f"not run: the control ran {', '.join(e.control_classifiers)} only (cost)" if control else
                    "not run: experiment.control_folds=0 or no control_classifiers")
        out.claims(with_control(claims, control, why_none), "claims",
                   title="Zeiler & Fergus Table 7: the paper's claim, decided over folds", notes=CLAIM_NOTES + control_text)
    ours, paper = {}, {}
    for arm, label in (("trained", "ours"), ("control", "random-weights control")):
        for name in names:
            for kind in e.classifiers:
                scores = [results[arm].get((name, layer, kind)) for layer in layers]
                if all(s is not None for s in scores):  # every fold's accuracy (%) at each layer
                    ours[f"{label} {name}: {kind}"] = (np.arange(1, len(layers) + 1) / len(layers),
                                                       [100 * np.asarray(s) for s in scores])
    for name in names:
        for kind in e.classifiers:
            points = [(layer / ZFNET_DEPTH, *TABLE7[kind, layer][TABLE7_COLUMN[name]]) for k, layer in TABLE7
                      if k == kind and name in TABLE7_COLUMN]
            if points:
                paper[f"paper (ZFNet) {name}: {kind}"] = tuple(np.asarray(points).T)
    out.figure(accuracy_vs_depth(ours, paper, f"Accuracy vs depth: {cfg.model.name} features ({weights}); ours: "
                                 "each fold a dot, mean with its 95 % t interval over folds; paper: std"),
               "accuracy_vs_depth")
    metrics = {f"{name}_{layer}_{kind}": round(100 * float(np.mean(s)), 2) for (name, layer, kind), s in results["trained"].items()}
    metrics.update({f"control_{name}_{layer}_{kind}": round(100 * float(np.mean(s)), 2)
                    for (name, layer, kind), s in results["control"].items()})
    metrics["feature_extraction_s"] = round(timings.get("extract_s", 0.0), 1)
    metrics["total_s"] = round(time.perf_counter() - start, 1)
    return metrics


CLAIM_NOTES = ("The claim is a trend over every layer: per fold, the least-squares slope of accuracy (points) on the "
               "layer's index, its t interval over folds (n = folds; each fold's layers are scored on the same test "
               "images); reproduced above 0, contradicted at or below 0, inconclusive when the interval includes 0 "
               "(fewer than the paper's 5 folds: the reason says n < 5). The old rule compared the last layer with the "
               "first alone (yes when the per-fold gain of head over stem lay above 0, else 'not reproduced'), which a "
               "drop in the middle layers could not contradict. The paper's number is its own column for the same "
               "classifier (softmax: layers 5 and 7 only).")
