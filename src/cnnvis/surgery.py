"""CAM by GAP surgery on a pretrained network, as Zhou et al. 2016 (Sec. 2) did it, with the trunk frozen.

Procedure: the pretrained network's maps at each cut (``cnnvis.gap.SURGERY_CUTS``) are computed once and cached
(``cnnvis.transfer.extract_features`` at full resolution); on them only the added layers are trained
(``cnnvis.gap.GapHead``: 3x3 conv + ReLU + GAP + linear), on each fold of the Caltech protocol (per class
``train_per_class`` training images, the rest test). The uncut network's reference is a new linear classifier on
its last layer (a GAP network's head: CAM applies; AlexNet / VGG16's fc7: classification only). Every trained
head passes through ``cnnvis.gate.training_gate``. Localization: the CAM of the true class (GT-known) and of the
predicted one (top-1), upsampled to the input, boxed by the paper's rule (largest component above 20 % of the
maximum), correct at IoU >= 0.5 with the object box; beside the centre-box and full-image baselines.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from cnnvis import localization as loc
from cnnvis.claims import NOT_COMPARABLE, Claim, Evidence, Threshold, claim_seed, decided
from cnnvis.data import decode_to_cache, per_class_split
from cnnvis.gap import GapHead, head_cams, predict_head, train_head
from cnnvis.gate import combine, gated, training_gate
from cnnvis.notes import smoke_note
from cnnvis.plotting.cams import method_grid
from cnnvis.stats import bootstrap_mean, t_mean
from cnnvis.transfer import cut_maps, mean_class_accuracy, scored_folds



def localization_hits(head: GapHead, maps, labels, predicted, boxes, size: int, threshold: float):
    """Per image: GT-known hit (the true class's CAM box has IoU >= 0.5) and top-1 hit (correct class and its
    CAM's box has IoU >= 0.5)."""
    true_cams = head_cams(head, maps, labels, size)
    pred_cams = head_cams(head, maps, predicted, size)
    gt = np.array([loc.localized(m, b, threshold) for m, b in zip(true_cams, boxes)])
    top1 = np.array([bool(p == y) and loc.localized(m, b, threshold)
                     for m, b, p, y in zip(pred_cams, boxes, predicted.tolist(), labels.tolist())])
    return gt, top1, true_cams


def run_folds(maps: dict[str, torch.Tensor], spatial: dict[str, bool], labels, boxes, n_classes: int,
              train_per_class: int, folds: int, seed: int, width: int, epochs: int, lr: float, batch_size: int,
              weight_decay: float, size: int, threshold: float, uncut: str):
    """Train the added layers on every cut (and a new classifier on ``uncut``) per fold. Returns (runs: one row
    per network x fold, hits: {network: {"gt": (N,), "top1": (N,), "tested": (N,)}} counted over folds, (fold 0's
    true-class CAMs {network: (N_test, size, size)}, its test indices), histories: one row per network x fold x
    epoch)."""
    labels = np.asarray(labels)
    rows, hits, shown, histories = [], {}, {}, []
    splits = list(scored_folds(labels, train_per_class, None, folds, seed))
    for fold, (train, test) in enumerate(tqdm(splits, desc="folds")):
        y_train, y_test = torch.as_tensor(labels[train]), torch.as_tensor(labels[test])
        for name, m in maps.items():
            torch.manual_seed(seed * 1000 + fold)
            head = GapHead(m.shape[1], n_classes, 0 if name == uncut else width)
            history = train_head(head, m[train], y_train, epochs, lr, batch_size, weight_decay, seed * 1000 + fold)
            histories.append(history.assign(network=name, fold=fold))
            predicted = predict_head(head, m[test])
            correct = int((predicted == y_test).sum())
            gate = training_gate(history, correct, len(test), n_classes)
            row = {"network": name, "fold": fold, "grid": m.shape[-1] if m.ndim == 4 else 0,
                   "mean_class_accuracy": 100 * mean_class_accuracy(labels[test], predicted.numpy()),
                   "train_top1_last_epoch": 100 * float(history["train_top1"].iloc[-1]),
                   "train_seconds": float(history["seconds"].sum()), "trained_enough": gate.passed,
                   "gate": gate.reason, "loc_gt_known": np.nan, "loc_top1": np.nan}
            if spatial[name]:
                gt, top1, cams = localization_hits(head, m[test], y_test, predicted, boxes[test], size, threshold)
                row.update(loc_gt_known=100 * gt.mean(), loc_top1=100 * top1.mean())
                h = hits.setdefault(name, {k: np.zeros(len(labels)) for k in ("gt", "top1", "tested")})
                h["gt"][test] += gt
                h["top1"][test] += top1
                h["tested"][test] += 1
                if fold == 0:
                    shown[name] = cams
            rows.append(row)
    columns = ["network", "fold", "epoch", "train_loss", "train_top1", "seconds"]
    return pd.DataFrame(rows), hits, (shown, splits[0][1]), pd.concat(histories, ignore_index=True)[columns]


def surgery_arm(model, images, labels, boxes, cuts: list[str], uncut: str, uncut_spatial: bool, size: int,
                cache_dir: str | None, tag: str, n_classes: int, train_per_class: int, folds: int, seed: int, width: int,
                epochs: int, lr: float, batch_size: int, weight_decay: float, threshold: float):
    """One network's surgery: its maps at every cut and at ``uncut`` (``cut_maps``), then ``run_folds`` on them
    (what it returns)."""
    maps = cut_maps(model, images, [*cuts, uncut], size, cache_dir, tag, next(model.parameters()).device)
    spatial = {**{c: True for c in cuts}, uncut: uncut_spatial}
    return run_folds(maps, spatial, labels, boxes, n_classes, train_per_class, folds, seed, width, epochs, lr,
                     batch_size, weight_decay, size, threshold, uncut)


def baseline_hits(boxes, size: int) -> dict[str, np.ndarray]:
    """Per image: does the centre box (leave-one-out mean size) / the full image have IoU >= 0.5 with the box."""
    centre = loc.centre_boxes_left_out(boxes, size, size)
    full = loc.full_image_box(size, size)
    return {"centre box": np.array([loc.iou(c, b) >= 0.5 for c, b in zip(centre, boxes)]),
            "full image": np.array([loc.iou(full, b) >= 0.5 for b in boxes])}


def per_image_rate(h: dict) -> np.ndarray:
    """Each tested image's hit rate over the folds that tested it (NaN where none did)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(h["tested"] > 0, h["gt"] / h["tested"], np.nan)


def summary(runs: pd.DataFrame, hits: dict, baselines: dict) -> pd.DataFrame:
    """One row per network (accuracy: mean over folds with its t interval; localization: per image over folds,
    bootstrap over images) and per baseline."""
    tested = next(iter(hits.values()))["tested"] > 0 if hits else None
    rows = []
    for name, g in runs.groupby("network", sort=False):
        row = {"network": name, "cam_grid": f"{g.grid.iloc[0]}x{g.grid.iloc[0]}" if g.grid.iloc[0] else "-",
               "mean_class_accuracy": t_mean(g.mean_class_accuracy).format(1),
               "loc_gt_known": "-", "loc_top1": "-", "trained_enough": f"{int(g.trained_enough.sum())}/{len(g)} folds"}
        if name in hits:
            h = hits[name]
            row["loc_gt_known"] = bootstrap_mean(100 * per_image_rate(h)).format(1)
            row["loc_top1"] = bootstrap_mean(100 * np.where(h["tested"] > 0, h["top1"] / np.maximum(h["tested"], 1),
                                                            np.nan)).format(1)
        rows.append(row)
    for name, hit in baselines.items():
        rows.append({"network": f"baseline: {name}", "cam_grid": "-", "mean_class_accuracy": "-",
                     "loc_gt_known": bootstrap_mean(100 * hit[tested].astype(float)).format(1) if tested is not None
                     else "-", "loc_top1": "-", "trained_enough": "-"})
    return pd.DataFrame(rows)


def fold_gate(runs: pd.DataFrame, *names: str):
    """The gate of the named networks over all folds: passed when every fold's head passed."""
    from cnnvis.gate import Gate

    gates = [Gate(bool(r.trained_enough), f"{r.network} fold {r.fold}: {r.gate}")
             for r in runs[runs.network.isin(names)].itertuples()]
    return combine(*gates)


def fold_differences(runs: pd.DataFrame, a: str, b: str, column: str = "mean_class_accuracy") -> np.ndarray:
    """Per fold, ``column`` of ``a`` minus that of ``b`` (the same fold's test images)."""
    wide = runs.pivot(index="fold", columns="network", values=column)
    return (wide[a] - wide[b]).to_numpy(dtype=float)


PAPER = "Zhou et al. 2016"
MIN_FOLDS = 5  # fewer folds (the CPU preset runs 3) decide only when the interval already does
SURGERY_RULES = ("\n\nRules: each claim is reproduced when its 95 % interval lies on the paper's side of its bar, "
                 "contradicted when it lies wholly on the other side, inconclusive when it includes the bar (fold "
                 "claims from fewer than 5 folds: the reason says n < 5); the resolution claim is not comparable when "
                 "the deeper cut's grid is no finer. The old rules read 'not reproduced' whenever the interval was "
                 "not wholly on the paper's side. Random-weights control: the same surgery, folds and baselines on a "
                 "randomly initialized trunk of the same architecture (cnnvis.transfer.random_twin, seeded); a claim "
                 "it also reproduces reads uninformative.")


def _claim(source: str, claim: str, paper_number: str, ours, baseline: str, rule_text: str, statistic: str,
           values: tuple, rule, gate) -> Claim:
    """A claim decided by ``rule`` on ``statistic`` of ``values`` (its own bootstrap seed); ``ours`` formats the
    estimate; "not comparable (undertrained: ...)" when ``gate`` failed."""
    evidence = Evidence(statistic, values, rule, claim_seed(source, claim))
    est = evidence.estimate()
    return gated(decided(PAPER, source, claim, paper_number, ours(est), est.n, baseline, rule_text, [evidence]), gate)


def surgery_claims(runs: pd.DataFrame, hits: dict, baselines: dict, cuts: list[str], uncut: str,
                   little_cost_points: float, network: str) -> list[Claim]:
    """The paper's claims, each decided by its rule on the interval of its values (per boxed test image: hit rates,
    bootstrap; per fold: accuracies, t with ``min_n=MIN_FOLDS``); a claim whose heads failed the gate is not
    comparable."""
    claims = []
    tested = next(iter(hits.values()))["tested"] > 0
    best_name = max(baselines, key=lambda k: baselines[k][tested].mean())
    best = baselines[best_name].astype(float)
    points = lambda est: est.format(3, 100) + " points"  # noqa: E731  (hit rates are fractions)
    fold_points = lambda est: est.format(1) + " points"  # noqa: E731
    on_images, hit = "(bootstrap over boxed test images)", "; hit: IoU >= 0.5 with the 20 %-of-max box"
    above, on_folds = Threshold(0.0), Threshold(0.0, min_n=MIN_FOLDS)
    for cut in cuts:  # 1. a GAP network localizes beyond the trivial boxes
        claims.append(_claim(
            "Table 2 / Fig. 3", f"{network} cut after {cut} + GAP: its CAM localizes objects beyond the trivial boxes",
            "qualitative (GT-known boxes far above baselines)", points,
            f"{best_name}: {100 * best[tested].mean():.1f} % (full image "
            f"{100 * baselines['full image'][tested].mean():.1f} %, centre box {100 * baselines['centre box'][tested].mean():.1f} %)",
            above.text(f"the CAM's GT-known hit rate minus the stronger baseline's {on_images}") + hit,
            "paired_difference", (per_image_rate(hits[cut])[tested], best[tested]), above, fold_gate(runs, cut)))
    if len(cuts) >= 2:  # 2. cutting deeper: a finer CAM grid and better localization, at some classification cost
        deep, last = cuts[0], cuts[-1]
        grid = {c: int(runs[runs.network == c].grid.iloc[0]) for c in (deep, last)}
        gate = fold_gate(runs, deep, last)
        finer = _claim(
            "Sec. 2", f"cutting {network} deeper ({deep}, CAM {grid[deep]}x{grid[deep]}) rather than at {last} "
            f"({grid[last]}x{grid[last]}) gives a higher-resolution map that localizes better",
            "qualitative (mapping resolution 14x14 localized better than 7x7)", points,
            "0 points (resolution does not help)",
            above.text(f"the deeper cut's GT-known hit rate minus the last cut's {on_images}") + hit,
            "paired_difference", (per_image_rate(hits[deep])[tested], per_image_rate(hits[last])[tested]), above, gate)
        if grid[deep] <= grid[last]:
            finer = replace(finer, verdict=NOT_COMPARABLE, reason=f"the deeper cut's CAM grid ({grid[deep]}x"
                            f"{grid[deep]}) is no finer than the last cut's: no resolution to compare")
        claims.append(finer)
        claims.append(_claim(
            "Sec. 2 / Table 1", f"cutting {network} deeper ({deep} rather than {last}) costs some classification "
            "accuracy", "qualitative", fold_points, "0 points (no cost)",
            on_folds.text(f"the mean per-class accuracy at {last} minus at {deep} (same fold; t over folds)"),
            "t_mean", (fold_differences(runs, last, deep),), on_folds, gate))
    little = Threshold(little_cost_points, above=False, min_n=MIN_FOLDS)
    for cut in cuts:  # 3. GAP costs little accuracy against the uncut network
        claims.append(_claim(
            "Table 1", f"{network} cut after {cut} + GAP costs little accuracy against the uncut network ({uncut} + "
            "new classifier)", "+2.2 points (VGGnet-GAP vs VGGnet), +2.3 (AlexNet*-GAP), ImageNet top-1", fold_points,
            f"{little_cost_points:g} points: the margin fixed before the run",
            little.text("the uncut network's mean per-class accuracy minus the GAP network's (same fold; t over folds)"),
            "t_mean", (fold_differences(runs, uncut, cut),), little, fold_gate(runs, cut, uncut)))
    return claims


def first_test_of_each_class(labels, test: np.ndarray, n: int) -> list[int]:
    """Positions in ``test`` of each class's first test image, the first ``n`` of them in test order."""
    first = {}
    for pos, j in enumerate(test):
        first.setdefault(labels[j], pos)
    return sorted(first.values())[:n]


def surgery_figure(images, labels, names, boxes, shown: dict, fold0_test, runs: pd.DataFrame, uncut: str, size: int,
                   n_images: int, title: str):
    """Fold 0's first test image of each of the first ``n_images`` classes with each network's CAM of the true class
    (``shown``, from ``run_folds``) and the object box; None when there is nothing to show."""
    pick = first_test_of_each_class(labels, fold0_test, n_images)
    if not pick or not shown:
        return None
    idx = [int(fold0_test[p]) for p in pick]
    side = {k: int(runs[runs.network == k].grid.iloc[0]) for k in shown}
    maps_shown = {(f"{k} ({side[k]}x{side[k]} CAM)" if k != uncut else f"uncut {k} ({side[k]}x{side[k]})"):
                  v[torch.as_tensor(pick)] for k, v in shown.items()}
    fig = method_grid(images.tensors(idx, size), maps_shown, title, [names[labels[j]] for j in idx], boxes[idx])
    fig.subplots_adjust(top=1 - (0.2 * (title.count("\n") + 1) + 0.3) / fig.get_figheight())  # room for the title
    return fig


def surgery_metrics(runs: pd.DataFrame) -> dict:
    """The gate's verdict and, per network, mean class accuracy and GT-known localization over folds."""
    metrics = {"trained_enough": int(bool(runs.trained_enough.all()))}
    for r in runs.groupby("network", sort=False)[["mean_class_accuracy", "loc_gt_known"]].mean().itertuples():
        metrics[f"{r.Index}/mean_class_accuracy"] = float(r.mean_class_accuracy)
        if pd.notna(r.loc_gt_known):
            metrics[f"{r.Index}/loc_gt_known"] = float(r.loc_gt_known)
    return metrics


def boxed_pool(index, boxes: dict, pool_per_class: int, seed: int, side: int, resize_mode: str, input_size: int,
               cache_dir: str | None, num_workers: int = 2, record=None):
    """Up to ``pool_per_class`` boxed images per class (seeded), decoded at ``side`` through the cache (noted in
    ``record``, a RunRecord, when given): (images,
    labels 0..n-1 over the boxed categories, their names, each image's box in input pixels (N, 4))."""
    pool, _ = per_class_split(index.labels, pool_per_class, 0, 0, seed)
    images = decode_to_cache(index.select(pool), side, resize_mode, cache_dir, num_workers, record)
    classes = np.unique(images.labels)
    labels = np.searchsorted(classes, images.labels)  # 0..n-1 over the boxed categories
    names = [images.classes[c] for c in classes]
    gt_boxes = np.stack([images.box_in_image(j, boxes[p], input_size) for j, p in enumerate(images.paths)])
    return images, labels, names, gt_boxes


def surgery_notes(network: str, cuts: list[str], uncut: str, uncut_spatial: bool, n_images: int, n_classes: int,
                  train_per_class: int, folds: int, epochs: int, width: int, lr: float, weight_decay: float,
                  batch_size: int, pool_per_class: int, input_size: int, threshold: float, seed: int,
                  cache_dir: str | None, smoke: bool) -> str:
    """The notes of the surgery's tables: the cut, the added layers, the data, the measures and the gate."""
    return (
        f"Network: {network}, cut after {', '.join(cuts)}; at each cut a 3x3 conv of {width} units (stride 1, pad 1;"
        f" the paper: 1024) + ReLU + global average pooling + linear is added. The pretrained trunk is frozen: its "
        f"maps at every cut are computed once (cached under {cache_dir}/features) and only the added layers are "
        f"trained (Adam lr {lr}, weight decay {weight_decay}, batch {batch_size}, {epochs} epochs, no "
        f"augmentation). Uncut reference: {uncut} + a new linear classifier"
        f"{' (a GAP network: its own CAM at ' + uncut + ')' if uncut_spatial else ' (no GAP: classification only)'}. "
        f"Data: the Caltech-101 images with object boxes ({n_classes} categories), up to {pool_per_class} per class "
        f"({n_images} images, seed {seed}); {folds} folds of {train_per_class} training images per class, the "
        f"rest of the pool test. Classification: mean per-class accuracy, mean over folds with a 95 % t interval. "
        f"Localization: CAM of the true class (loc_gt_known) or the predicted one (loc_top1: also the right class), "
        f"upsampled bilinearly to {input_size} px, box of the largest component above "
        f"{threshold:g} of its maximum, hit at IoU >= 0.5; per image the hit rate over the folds that "
        "tested it, 95 % bootstrap interval over images. Baselines: the centred box of the other images' mean box "
        "size (leave-one-out) and the full image. Every head passes through the trained-enough gate (the mean "
        "training loss of its last 3 epochs < 10 % below that of the 3 before, training top-1 >= 0.9, held-out "
        "top-1's Wilson lower bound > chance + 0.1); a claim whose heads failed reads 'not comparable (undertrained: ...)'."
        + smoke_note(smoke, "3 classes of 6 images, 2 folds, 2 epochs"))
