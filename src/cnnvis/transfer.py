"""Transfer of a trained network's features to new datasets (Zeiler & Fergus 2013, Sec. 5.2, Tables 4, 5, 7).

A frozen backbone's activations are extracted once per (backbone weights and architecture, layer, dataset,
transform) and cached on disk; scikit-learn classifiers (softmax = multinomial logistic regression, linear
SVM) are then trained on them for every fold of the papers' protocol: per class ``train_per_class`` random
training images, up to ``test_per_class`` of the rest for testing, the mean of the per-class accuracies,
over several seeded folds.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import math
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.nn import functional as F
from tqdm import tqdm

from cnnvis.claims import NOT_COMPARABLE, Claim, Evidence, Threshold, claim_seed, decided
from cnnvis.data import ImageIndex, ImageSet, cache_key, per_class_split
from cnnvis.gate import Gate, combine, gated
from cnnvis.hooks import activations
from cnnvis.notes import smoke_note
from cnnvis.run_record import RunRecord
from cnnvis.stats import slopes, t_mean

log = logging.getLogger(__name__)

FEATURE_CACHE_VERSION = 1
CLASSIFIERS = ("softmax", "svm")


# ---------------------------------------------------------------- keys of the feature cache


def model_fingerprint(model: nn.Module) -> str:
    """A hash of the architecture (its module tree) and of every weight and buffer, bit for bit."""
    h = hashlib.sha1(repr(model).encode())
    for name, tensor in model.state_dict().items():
        t = tensor.detach().cpu().contiguous().reshape(-1)
        h.update(f"{name}|{tuple(tensor.shape)}|{t.dtype}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def dataset_fingerprint(images: ImageSet) -> str:
    """The decoded images' identity: their files (paths, sizes, dates), labels, cached side and resize mode."""
    index = ImageIndex(images.name, images.paths, images.labels, images.classes)
    return cache_key(index, images.images.shape[1], images.resize_mode)


def feature_key(model_id: str, layer: str, data_id: str, input_size: int, grid: int,
                target_features: int | None = None) -> str:
    """The cache key of one layer's features; the transform is the center crop to ``input_size`` of the
    cached images and the ``grid`` x ``grid`` average pooling of the layer's maps."""
    pooling = f"avg-pool {grid}x{grid}" if target_features is None else f"avg-pool to ~{target_features} features"
    text = f"{FEATURE_CACHE_VERSION}|{model_id}|{layer}|{data_id}|center-crop {input_size}|{pooling}"
    return hashlib.sha1(text.encode()).hexdigest()[:16]


# ---------------------------------------------------------------- extraction


def grid_for(channels: int, side: int, target_features: int) -> int:
    """Cells per side (1..``side``) whose ``channels * g * g`` features come nearest ``target_features``."""
    return int(min(side, max(1, round(math.sqrt(target_features / channels)))))


def pool_features(act: torch.Tensor, grid: int = 1, target_features: int | None = None) -> torch.Tensor:
    """(N, C, H, W) maps -> (N, C * grid * grid) by average pooling over a grid of cells (grid 1: global
    average; with ``target_features`` the grid of ``grid_for``, so every layer keeps a few thousand numbers);
    (N, D) vectors pass through."""
    if act.ndim == 4:
        if target_features is not None:
            grid = grid_for(act.shape[1], min(act.shape[-2:]), target_features)
        return F.adaptive_avg_pool2d(act, grid).flatten(1)
    return act.flatten(1)


# pool_features keeps a map's every cell when its grid may reach the map's side: a target this large asks for that
FULL_MAPS = 10 ** 12


@torch.inference_mode()
def _extract(model, images: ImageSet, layers, input_size, grid, batch_size, device,
             target_features=None) -> dict[str, np.ndarray]:
    out = {name: [] for name in layers}
    for start in tqdm(range(0, len(images), batch_size), desc=f"features of {images.name}", leave=False):
        x = images.tensors(np.arange(start, min(start + batch_size, len(images))), input_size).to(device)
        for name, act in activations(model, x, layers).items():
            out[name].append(pool_features(act.float(), grid, target_features).cpu().numpy())
    return {name: np.concatenate(parts).astype(np.float32) for name, parts in out.items()}


def extract_features(model: nn.Module, images: ImageSet, layers, input_size: int, cache_dir: str | None,
                     tag: str = "model", grid: int = 1, batch_size: int = 32, device="cpu",
                     timings: dict | None = None, target_features: int | None = None) -> dict[str, np.ndarray]:
    """Pooled features {layer: (N, D) float32} of every image (``pool_features``), read from
    ``cache_dir/features`` when present; the missing layers are computed together in one pass over the data and
    cached. ``timings`` (if given) gets the seconds spent extracting under ``"extract_s"``."""
    layers = [layers] if isinstance(layers, str) else list(layers)
    model = model.eval().to(device)
    model_id, data_id = model_fingerprint(model), dataset_fingerprint(images)
    files = {name: Path(cache_dir or ".") / "features" /
             f"{images.name}-{tag}-{name}-{feature_key(model_id, name, data_id, input_size, grid, target_features)}.npy"
             for name in layers}
    found = {name: np.load(f) for name, f in files.items() if cache_dir and f.exists()}
    missing = [name for name in layers if name not in found]
    if missing:
        start = time.perf_counter()
        computed = _extract(model, images, missing, input_size, grid, batch_size, device, target_features)
        if timings is not None:
            timings["extract_s"] = timings.get("extract_s", 0.0) + time.perf_counter() - start
        log.info("%s: extracted %s of %d images in %.1f s", tag, ", ".join(missing), len(images),
                 time.perf_counter() - start)
        for name, feats in computed.items():
            if cache_dir:
                files[name].parent.mkdir(parents=True, exist_ok=True)
                tmp = files[name].with_name(files[name].stem + ".tmp.npy")
                np.save(tmp, feats)
                os.replace(tmp, files[name])  # atomic: a killed run never leaves a half-written cache entry
        found.update(computed)
    return {name: found[name] for name in layers}


def cut_maps(model, images, layers, input_size: int, cache_dir: str | None, tag: str, device="cpu",
             batch_size: int = 32) -> dict[str, torch.Tensor]:
    """{layer: (N, C, h, w) float32 maps} of every image, through the feature cache (``extract_features``, full resolution)."""
    with torch.inference_mode():
        shapes = {k: tuple(v.shape[1:]) for k, v in
                  activations(model.eval().to(device), images.tensors([0], input_size).to(device), layers).items()}
    flat = extract_features(model, images, layers, input_size, cache_dir, tag, batch_size=batch_size, device=device,
                            target_features=FULL_MAPS)
    return {k: torch.from_numpy(flat[k]).reshape(len(images), *shapes[k]) for k in layers}


# ---------------------------------------------------------------- classifiers and scores


class LinearSVM:
    """A linear SVM (scikit-learn's libsvm ``SVC``, one-vs-one) on standardized features, trained on the
    precomputed linear kernel: one BLAS product instead of libsvm's per-pair dot products, and unlike
    liblinear's one-vs-rest it stays fast with 100+ classes of 15-60 images."""

    def __init__(self, C: float = 1.0):
        self.C = C

    def fit(self, X, y):
        from sklearn.preprocessing import StandardScaler
        from sklearn.svm import SVC

        self.scaler_ = StandardScaler().fit(X)
        self.train_ = self.scaler_.transform(X).astype(np.float32)
        self.gram_, self.y_ = self.train_ @ self.train_.T, np.asarray(y)
        self.svc_ = SVC(kernel="precomputed", C=self.C).fit(self.gram_, self.y_)
        return self

    def with_C(self, C: float) -> "LinearSVM":
        """The same SVM trained with another C on the kernel already computed (a C search pays for it once)."""
        from sklearn.svm import SVC

        other = copy.copy(self)
        other.C, other.svc_ = C, SVC(kernel="precomputed", C=C).fit(self.gram_, self.y_)
        return other

    def decision_function(self, X):
        return self.svc_.decision_function(self.scaler_.transform(X).astype(np.float32) @ self.train_.T)

    def predict(self, X):
        return self.svc_.predict(self.scaler_.transform(X).astype(np.float32) @ self.train_.T)


def make_classifier(kind: str, C: float = 1.0, seed: int = 0):
    """``softmax``: multinomial logistic regression (L-BFGS) on standardized features; ``svm``: ``LinearSVM``."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if kind == "softmax":
        return make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=300, random_state=seed))
    if kind == "svm":
        return LinearSVM(C)
    raise ValueError(f"unknown classifier {kind!r}; available: {', '.join(CLASSIFIERS)}")


def per_class_accuracy(y_true, y_pred) -> np.ndarray:
    """Recall of every class present in ``y_true`` (the diagonal of the row-normalized confusion matrix,
    whose rows count every prediction, also of classes absent from ``y_true``)."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    return np.array([np.mean(y_pred[y_true == c] == c) for c in np.unique(y_true)])


def mean_class_accuracy(y_true, y_pred) -> float:
    """The papers' Caltech score: the mean over classes of the per-class accuracies."""
    return float(per_class_accuracy(y_true, y_pred).mean())


def caltech_folds(labels, train_per_class: int, test_per_class: int | None, folds: int, seed: int = 0):
    """The (train, test) indices of each fold: ``per_class_split`` seeded by (seed, fold)."""
    return [per_class_split(labels, train_per_class, test_per_class, fold, seed) for fold in range(folds)]


def scored_folds(labels, train_per_class: int, test_per_class: int | None, folds: int, seed: int = 0):
    """``caltech_folds``, failing clearly where a fold leaves no test image to score."""
    for train, test in caltech_folds(labels, train_per_class, test_per_class, folds, seed):
        if len(test) == 0:
            raise ValueError(f"no test images left with {train_per_class} training images per class: "
                             f"lower train_per_class or use a dataset with more images per class")
        yield train, test


def fold_accuracies(features: np.ndarray, labels, train_per_class: int, test_per_class: int | None,
                    folds: int, classifier: str = "softmax", C: float = 1.0, seed: int = 0) -> list[float]:
    """Mean per-class test accuracy of a classifier trained on each fold's training images."""
    labels = np.asarray(labels)
    scores = []
    for train, test in scored_folds(labels, train_per_class, test_per_class, folds, seed):
        clf = make_classifier(classifier, C, seed).fit(features[train], labels[train])
        scores.append(mean_class_accuracy(labels[test], clf.predict(features[test])))
    return scores


def choose_C(features: np.ndarray, labels, classifier: str, grid, cv: int = 2, seed: int = 0) -> tuple[float, dict]:
    """(the C of ``grid`` with the best mean per-class accuracy in a stratified ``cv``-fold cross-validation on
    ``features`` alone, {C: that accuracy}); ties go to the smaller C. Give it training images only. The softmax
    starts each C from the previous (smaller) C's solution, as a regularization path does: the optimum is
    unique, so only the iterations to reach it change (about 40 % fewer on 3,000 features x 102 classes)."""
    from sklearn.model_selection import StratifiedKFold

    labels = np.asarray(labels)
    splits = list(StratifiedKFold(cv, shuffle=True, random_state=seed).split(features, labels))
    grid = sorted(grid)
    accuracy = {C: [] for C in grid}
    for tr, va in splits:
        clf = None
        for C in grid:
            if clf is None:
                clf = make_classifier(classifier, C, seed).fit(features[tr], labels[tr])
            elif isinstance(clf, LinearSVM):
                clf = clf.with_C(C)
            else:
                clf = copy.deepcopy(clf).set_params(logisticregression__C=C, logisticregression__warm_start=True)
                clf.fit(features[tr], labels[tr])
            accuracy[C].append(mean_class_accuracy(labels[va], clf.predict(features[va])))
    scores = {C: float(np.mean(a)) for C, a in accuracy.items()}
    return max(scores, key=scores.get), scores  # max keeps the first (smallest) C of a tie


def softmax_fold_scores(model: nn.Module, layer: str, images: ImageSet, input_size: int, cache_dir: str | None,
                        tag: str, settings, test_per_class: int | None, folds: int, C: float, seed: int = 0,
                        batch_size: int = 16, timings: dict | None = None) -> tuple[int, dict]:
    """(the feature dimension, {images per class: ``fold_accuracies`` of a new softmax}) on ``model``'s pooled
    ``layer`` features (``extract_features``: extracted once, cached), for each of ``settings``."""
    feats = extract_features(model, images, layer, input_size, cache_dir, tag=tag, batch_size=batch_size,
                             timings=timings)[layer]
    return feats.shape[1], {n: fold_accuracies(feats, images.labels, n, test_per_class, folds, "softmax", C, seed)
                            for n in settings}


def cv_fold_accuracies(features: np.ndarray, labels, train_per_class: int, test_per_class: int | None, folds: int,
                       classifier: str, C_grid, cv: int = 2, seed: int = 0) -> list[tuple[float, float]]:
    """Per fold (accuracy, C): C chosen by ``choose_C`` on that fold's training images, then the classifier
    trained on all of them and scored on the fold's test images (which never take part in the choice)."""
    labels = np.asarray(labels)
    out = []
    for train, test in scored_folds(labels, train_per_class, test_per_class, folds, seed):
        C, _ = choose_C(features[train], labels[train], classifier, C_grid, cv, seed)
        clf = make_classifier(classifier, C, seed).fit(features[train], labels[train])
        out.append((mean_class_accuracy(labels[test], clf.predict(features[test])), C))
    return out


def fold_estimate(values) -> str:
    """Accuracy fractions over folds -> '83.8 [83.1, 84.5] (n = 5)': percent, mean with its 95 % t interval;
    one fold prints '(n = 1)' and no interval."""
    return t_mean(100 * np.asarray(values, dtype=np.float64)).format(1)


def layer_accuracies(features: dict[str, np.ndarray], labels, classifiers, train_per_class: int,
                     test_per_class: int | None, folds: int, C_grid: dict, cv: int = 2, seed: int = 0) -> dict:
    """{(layer, classifier): [(accuracy, C) per fold]}: ``cv_fold_accuracies`` of every layer's features with every
    classifier (the same folds, so each fold's layers are scored on the same test images)."""
    return {(layer, kind): cv_fold_accuracies(feats, labels, train_per_class, test_per_class, folds, kind, C_grid[kind],
                                              cv, seed)
            for layer, feats in features.items() for kind in classifiers}


# Zeiler & Fergus 2013, Table 7: (classifier, ZFNet layer) -> Caltech-101 (30/class), Caltech-256 (60/class), %:
# mean ± std over 5 folds. The paper ran the softmax on layers 5 and 7 only.
TABLE7 = {
    ("svm", 1): ((44.8, 0.7), (24.6, 0.4)),
    ("svm", 2): ((66.2, 0.5), (39.6, 0.3)),
    ("svm", 3): ((72.3, 0.4), (46.0, 0.3)),
    ("svm", 4): ((76.6, 0.4), (51.3, 0.1)),
    ("svm", 5): ((86.2, 0.8), (65.6, 0.3)),
    ("svm", 7): ((85.5, 0.4), (71.7, 0.2)),
    ("softmax", 5): ((82.9, 0.4), (65.7, 0.5)),
    ("softmax", 7): ((85.4, 0.4), (72.6, 0.1)),
}
TABLE7_COLUMN = {"caltech101": 0, "caltech256": 1}
MIN_FOLDS = 5  # the paper's folds; fewer decide only when the interval already does
ZF_PAPER = "Zeiler & Fergus 2014"


def table7_trend(dataset: str, kind: str) -> str:
    """The paper's column for ``kind`` on ``dataset``: its accuracy at each layer it ran and its least-squares slope
    over the layer numbers."""
    layers = [layer for k, layer in TABLE7 if k == kind]
    values = [TABLE7[kind, layer][TABLE7_COLUMN[dataset]][0] for layer in layers]
    slope = np.polyfit(layers, values, 1)[0]
    name = "SVM" if kind == "svm" else "Softmax"
    return (f"{name} layers {', '.join(map(str, layers))}: {', '.join(f'{v:g}' for v in values)} % "
            f"({slope:+.2f} points per layer)")


def depth_claim(dataset: str, kind: str, scores: list, layers: list[str]) -> Claim:
    """"Deeper layers give better features", as a trend over every layer: per fold, the least-squares slope of the
    accuracy (points) on the layer's index (``layers`` input to output, each fold's layers scored on the same test
    images); reproduced when the t interval over folds of the slope lies above 0 (``Threshold(0, min_n=MIN_FOLDS)``).
    ``scores``: per layer, the accuracy fraction of each fold."""
    points = 100 * np.asarray(scores, dtype=float)  # layers x folds
    claim = f"deeper layers give better features ({dataset}, {kind})"
    rule = Threshold(0.0, min_n=MIN_FOLDS)
    evidence = Evidence("t_mean", (slopes(points.T),), rule, claim_seed("Table 7", claim))
    est = evidence.estimate()
    return decided(ZF_PAPER, "Table 7", claim, table7_trend(dataset, kind),
                   f"{est.format(2)} points per layer over {len(layers)} layers", est.n,
                   f"the first layer ({layers[0]}): {fold_estimate(scores[0])}; the last ({layers[-1]}): "
                   f"{fold_estimate(scores[-1])}",
                   rule.text(f"the per-fold least-squares slope of accuracy (points) on layer index over all "
                             f"{len(layers)} layers, {layers[0]} to {layers[-1]} (t over folds)"), [evidence])


# ---------------------------------------------------------------- Tables 4 and 5

# Zeiler & Fergus 2013, Table 4 (Caltech-101) and Table 5 (Caltech-256): the paper prints mean ± std over 5 folds, in %.
TABLES_4_5 = {
    "caltech101": {"pretrained": {15: (83.8, 0.5), 30: (86.5, 0.5)},
                   "scratch": {15: (22.8, 1.5), 30: (46.5, 1.7)}},
    "caltech256": {"pretrained": {15: (65.7, 0.2), 30: (70.6, 0.2), 45: (72.7, 0.4), 60: (74.2, 0.3)},
                   "scratch": {15: (9.0, 1.4), 30: (22.5, 0.7), 45: (31.2, 0.5), 60: (38.8, 1.4)}},
}
TABLES_4_5_ROW = {"pretrained": "ImageNet-pretrained convnet", "scratch": "non-pretrained convnet"}


def with_paper(rows: list[dict], name: str, settings) -> pd.DataFrame:
    """Tables 4 / 5: our rows with the paper's number for the same kind of row beside each setting."""
    out = []
    for row in rows:
        kind = "scratch" if row["method"].startswith("trained from scratch") else "pretrained"
        row = {**row, "paper row": TABLES_4_5_ROW[kind]}
        for n in settings:
            ref = TABLES_4_5.get(name, {}).get(kind, {}).get(n)
            row[f"paper {n}/class"] = f"{ref[0]} ± {ref[1]}" if ref else "-"
        out.append(row)
    return pd.DataFrame(out)


def curves_of(per_fold: pd.DataFrame, name: str) -> dict:
    """{'ours: <backbone> <method>': [(images per class, every fold's accuracy %)]} of ``name``'s folds, for the
    figure (which draws each fold and the interval over folds)."""
    curves = {}
    if len(per_fold):
        for (method, backbone), g in per_fold[per_fold.dataset == name].groupby(["method", "backbone"]):
            curves[f"ours: {backbone} {method}"] = [(n, 100 * folds.accuracy.to_numpy())
                                                    for n, folds in g.groupby("train_per_class")]
    return curves


def tables_4_5_notes(test_per_class: int, seed: int, n_classes: int | None, include_background: bool, C: float,
                     scratch: bool, scratch_input_size: int, epochs: int, scratch_folds: int, smoke: bool) -> str:
    """The notes of Tables 4 and 5: the protocol, the classifier, the from-scratch preset, the networks."""
    bg = "with" if include_background else "without"
    return (
        f"Mean of per-class accuracies (%) on up to {test_per_class} test images per class, mean with its "
        f"95 % t interval over folds, n = folds (seeded by (seed={seed}, fold)). Classes: "
        f"{'-' if n_classes is None else n_classes} ({bg} the background class; "
        f"`dataset.include_background` switches). Pretrained rows: frozen backbone, global-average-pooled "
        f"penultimate features, scikit-learn multinomial logistic regression (C={C}) on standardized features. "
        + (f"From-scratch rows: a CPU preset ({scratch_input_size} px, {epochs} epochs, "
           f"{scratch_folds} fold) instead of the paper's 224 px, 5 folds and training to convergence, so "
           f"they are far below what the architecture reaches. " if scratch else
           "From-scratch rows: not trained in this run (experiment.scratch=false: training every layer on a "
           "CPU takes hours); run them with experiment.scratch=true (CPU preset) or on a GPU with "
           "experiment.scratch_input_size=224. ")
        + "The paper's convnet is ZFNet pretrained on "
        "ImageNet-2012 (softmax on layer 7); ours is EfficientNet-Lite0 (the offline ImageNet model); "
        "resnet18/zfnet/alexnet rows run only when their weights are present."
        + smoke_note(smoke, "a sliver of the data"))


TABLES_4_5_SOURCE = {"caltech101": ("Table 4", "Caltech-101"), "caltech256": ("Table 5", "Caltech-256")}


def pretrained_claims(name: str, per_fold: pd.DataFrame, settings, not_run: str | None = None) -> list[Claim]:
    """Table 4 / 5 against ZF's ImageNet-pretrained convnet at each of the paper's training sizes: per pretrained
    backbone that ran, reproduced when the t interval over folds of our mean per-class accuracy (%) lies above ZF's
    mean (``Threshold(paper, min_n=MIN_FOLDS)``), contradicted when it lies at or below it; not comparable at a size
    this run did not use, or when no backbone ran (``not_run`` says why: the data or the weights absent)."""
    source, title = TABLES_4_5_SOURCE[name]
    paper = TABLES_4_5[name]
    ran = per_fold[(per_fold.dataset == name) & (per_fold.method == "pretrained")] if len(per_fold) else per_fold
    claims = []
    for n, (mean, std) in paper["pretrained"].items():
        rule = Threshold(mean, min_n=MIN_FOLDS)
        number = f"{mean} ± {std} % (ZF's ImageNet-pretrained convnet; mean ± std over 5 folds)"
        baseline = "ZF's non-pretrained convnet: {} ± {} %".format(*paper["scratch"][n])
        rule_text = rule.text(f"our mean per-class accuracy (%, t over folds) at {n}/class")
        for backbone in list(ran.backbone.unique()) if len(ran) else [None]:
            text = (f"ImageNet-pretrained features{f' ({backbone})' if backbone else ''} + a new softmax reach ZF's "
                    f"accuracy on {title} at {n} images per class")
            scores = ran[(ran.backbone == backbone) & (ran.train_per_class == n)].sort_values("fold").accuracy \
                if backbone else []
            if not len(scores):
                why = not_run if backbone is None else f"not run at {n}/class (this run: {', '.join(map(str, settings))} per class)"
                claims.append(Claim(ZF_PAPER, source, text, number, "-", 0, baseline, rule_text, NOT_COMPARABLE,
                                    why or "no pretrained backbone ran"))
                continue
            evidence = Evidence("t_mean", (100 * scores.to_numpy(dtype=float),), rule, claim_seed(source, text))
            est = evidence.estimate()
            claims.append(decided(ZF_PAPER, source, text, number, f"{est.format(1)} %", est.n, baseline, rule_text,
                                  [evidence]))
    return claims


def scratch_claims(name: str, per_fold: pd.DataFrame, archs, settings, not_run: str | None = None) -> list[Claim]:
    """Table 4 / 5's non-pretrained row: per architecture of ``archs`` and paper size, the same network trained from
    scratch on the dataset falls short of its ImageNet-pretrained features: the per-fold difference pretrained minus
    scratch (points, the same fold's images), t over folds, ``Threshold(0, min_n=MIN_FOLDS)``; "not comparable
    (undertrained: ...)" unless every from-scratch fold passed its trained-enough gate (``trained_enough``,
    ``gate``); not comparable where either was not run (``not_run``, or the size)."""
    source, title = TABLES_4_5_SOURCE[name]
    paper = TABLES_4_5[name]
    ours = per_fold[per_fold.dataset == name] if len(per_fold) else per_fold
    rule = Threshold(0.0, min_n=MIN_FOLDS)
    rule_text = rule.text("the per-fold accuracy of the pretrained features minus the from-scratch network's (points, "
                          "the same fold's images; t over folds)")
    claims = []
    for arch in archs:
        for n, (scratch_mean, _) in paper["scratch"].items():
            text = f"{arch} trained from scratch on {title} falls short of its ImageNet-pretrained features ({n}/class)"
            number = "{:+.1f} points (ZF: pretrained {} vs non-pretrained {} %)".format(
                paper["pretrained"][n][0] - scratch_mean, paper["pretrained"][n][0], scratch_mean)
            mine = {m: ours[(ours.method == m) & (ours.backbone == arch) & (ours.train_per_class == n)].set_index("fold")
                    for m in ("pretrained", "scratch")} if len(ours) else {}
            folds = sorted(set(mine["pretrained"].index) & set(mine["scratch"].index)) if mine else []
            if not folds:
                why = not_run or f"not run at {n}/class both ways (this run: {', '.join(map(str, settings))} per class)"
                claims.append(Claim(ZF_PAPER, source, text, number, "-", 0, "0 points (pretraining does not help)",
                                    rule_text, NOT_COMPARABLE, why))
                continue
            gap = 100 * (mine["pretrained"].accuracy[folds] - mine["scratch"].accuracy[folds]).to_numpy(dtype=float)
            evidence = Evidence("t_mean", (gap,), rule, claim_seed(source, text))
            est = evidence.estimate()
            gate = combine(*(Gate(bool(mine["scratch"].trained_enough[k]), f"{arch} from scratch, {n}/class, fold {k}: "
                                  f"{mine['scratch'].gate[k]}") for k in folds))
            claims.append(gated(decided(ZF_PAPER, source, text, number, f"{est.format(1)} points", est.n,
                                        "0 points (pretraining does not help)", rule_text, [evidence]), gate))
    return claims


def grid_edges(chosen: dict, C_grid: dict) -> str:
    """How often the chosen C sits at an end of its grid (where a wider grid might have chosen beyond it)."""
    parts = []
    for kind, grid in C_grid.items():
        picks = [C for (_, _, k), Cs in chosen.items() if k == kind for C in Cs]
        if picks:
            parts.append(f"{kind}: at the largest C in {sum(C == max(grid) for C in picks)} and at the smallest in "
                         f"{sum(C == min(grid) for C in picks)} of {len(picks)} choices")
    return f" ({'; '.join(parts)})" if parts else ""


# ---------------------------------------------------------------- backbones and datasets of the experiments

# The layer whose (pooled) output is "the features" of a backbone: its penultimate layer.
FEATURE_LAYER = {"efficientnet_lite0": "head", "resnet18": "layer4", "zfnet": "fc7", "alexnet": "fc7", "vgg16": "fc7"}
DATA_ABSENT = "not run: data absent"


class NotRun(Exception):
    """A table row that cannot be computed here (weights or data absent); the message is the row's text."""


def feature_backbone(name: str, checkpoint: str | None = None):
    """(model, feature layer, where its weights come from) for a frozen pretrained backbone, or ``NotRun``
    saying which file is missing."""
    from cnnvis.models import PRETRAINED_BUILTIN, build_model, load_checkpoint_state

    if name not in FEATURE_LAYER:
        raise ValueError(f"unknown backbone {name!r}; available: {', '.join(FEATURE_LAYER)}")
    if checkpoint:
        if not Path(checkpoint).is_file():
            raise NotRun(f"not run: checkpoint {checkpoint} absent")
        size = checkpoint_input_size(name, load_checkpoint_state(checkpoint))
        return build_model(name, checkpoint=checkpoint, input_size=size).eval(), FEATURE_LAYER[name], checkpoint
    if name not in PRETRAINED_BUILTIN:
        raise NotRun(f"not run: no checkpoint (train one with experiment=train model={name}, then set "
                     f"experiment.checkpoints.{name}=PATH)")
    try:
        model = build_model(name, pretrained=True).eval()
    except FileNotFoundError:
        raise NotRun(f"not run: weights absent (put {imagenet_weights_file(name)} in $TORCH_HOME/hub/checkpoints)") from None
    return model, FEATURE_LAYER[name], "ImageNet"


def random_twin(model: nn.Module, name: str, input_size: int, seed: int = 0) -> nn.Module:
    """The random-weights control's network: ``model``'s architecture randomly initialized (seeded), in eval mode.
    ``build_model(name, pretrained=False)`` where that builds the same architecture (its own initialization); else
    (a torchvision variant, a width-scaled checkpoint, another head) a copy of ``model`` whose every layer is
    re-initialized by its ``reset_parameters`` (PyTorch's default initialization)."""
    from cnnvis.models import build_model

    torch.manual_seed(seed)
    twin = build_model(name, pretrained=False, input_size=input_size)
    shapes = {k: v.shape for k, v in model.state_dict().items()}
    if {k: v.shape for k, v in twin.state_dict().items()} != shapes:
        twin = copy.deepcopy(model)
        torch.manual_seed(seed)
        for module in twin.modules():
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()
        twin.weights_source = "random init (its layers' default initialization)"
    return twin.eval().to(next(model.parameters()).device)


def imagenet_weights_file(name: str) -> str:
    import torchvision

    return os.path.basename(torchvision.models.get_model_weights(name).IMAGENET1K_V1.url)


def checkpoint_input_size(name: str, state: dict) -> int:
    """The input size an AlexNet/ZFNet checkpoint was built for (its fc6 width fixes it); 224 otherwise."""
    from cnnvis.models import build_model

    fc6 = state.get("classifier.fc6.weight")
    if fc6 is None:
        return 224
    for size in range(64, 321, 8):
        if build_model(name, num_classes=2, input_size=size).classifier.fc6.in_features == fc6.shape[1]:
            return size
    raise ValueError(f"no input size between 64 and 320 gives {name} an fc6 of {fc6.shape[1]} inputs")


def load_datasets(dataset_cfg, names, input_size: int, cache_dir: str | None, smoke: bool = False,
                  record: RunRecord | None = None) -> dict:
    """{name: ImageSet, or None when absent} for ``names`` read like ``dataset_cfg`` (its root, background
    option, resize); fails with the first dataset's error only when none is present. Each set decoded is added to
    ``record`` when one is given."""
    from omegaconf import OmegaConf

    from cnnvis.data import DatasetNotFoundError, load_images

    found, errors = {}, []
    for name in names:
        try:
            found[name] = load_images(OmegaConf.merge(dataset_cfg, {"name": name}), input_size, cache_dir, smoke,
                                      record)
        except DatasetNotFoundError as err:
            log.warning("%s: %s", DATA_ABSENT, err)
            found[name], _ = None, errors.append(err)
    if all(v is None for v in found.values()):
        raise errors[0]
    return found


@torch.no_grad()
def predict(model: nn.Module, dataset, device="cpu", batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """(labels, predicted labels) of a (image, label) dataset."""
    from torch.utils.data import DataLoader

    model.eval().to(device)
    ys, preds = [], []
    for x, y in DataLoader(dataset, batch_size=batch_size):
        preds.append(model(x.to(device)).argmax(1).cpu().numpy())
        ys.append(y.numpy())
    return np.concatenate(ys), np.concatenate(preds)


def run_key(*parts) -> str:
    """A short hash of a run's settings: names its checkpoint folder, so a changed setting never resumes
    from another run's checkpoint."""
    return hashlib.sha1("|".join(map(str, parts)).encode()).hexdigest()[:12]
