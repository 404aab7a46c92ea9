"""The CAM paper's Tables 1-2 in miniature (Zhou et al. 2016): networks and their GAP versions trained from
scratch, each localized by its CAM (the original, without GAP, by Grad-CAM at its last conv layer), and the
paper's Table 1 orderings decided over training seeds."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from cnnvis import localization as loc
from cnnvis.cams import CAM, GradCAM
from cnnvis.claims import Claim, Evidence, Threshold, claim_seed, decided
from cnnvis.gap import GAP_VARIANTS, LAST_CONV, build_gap_model, count_parameters
from cnnvis.gate import gated
from cnnvis.models import build_model
from cnnvis.notes import smoke_note
from cnnvis.stats import t_mean

# CAM paper Tab. 1: top-1 classification error on ILSVRC val (ImageNet-pretrained networks fine-tuned to GAP).
PAPER_TOP1_ERR = {"alexnet": 42.6, "alexnet-gap": 51.1, "alexnet*-gap": 44.9, "vgg16": 31.2, "vgg16-gap": 33.4}


def build_variant(name: str, num_classes: int, input_size: int):
    if name in GAP_VARIANTS:
        return build_gap_model(name, num_classes, input_size)
    if name not in LAST_CONV:
        raise KeyError(f"unknown variant {name!r}; available: {', '.join([*LAST_CONV, *GAP_VARIANTS])}")
    return build_model(name, num_classes, False, None, input_size)


def localize(model, name, images, test_set, boxes, size, threshold):
    """Per boxed test image: the map of the true class (GT-known) and of the predicted class (top-1)."""
    base = GAP_VARIANTS.get(name, (name,))[0]
    method = CAM(model, "cam") if name in GAP_VARIANTS else GradCAM(model, LAST_CONV[base])
    rows, shown = [], []
    boxed = [j for j in test_set.idx if images.paths[j] in boxes]
    with method:
        for j in tqdm(boxed, desc=f"localizing {name}", leave=False):
            x = images.tensors([j], size)
            label = int(images.labels[j])
            with torch.no_grad():
                predicted = int(model(x).argmax(1))
            maps = method.attribute(x.repeat(2, 1, 1, 1), [label, predicted])
            gt = images.box_in_image(j, boxes[images.paths[j]], size)
            ious = [loc.iou(loc.box_from_map(m, threshold), gt) for m in maps]
            rows.append({"correct": predicted == label, "iou_true_class": ious[0], "iou_predicted": ious[1]})
            shown.append((j, maps[0], gt))
    return pd.DataFrame(rows, columns=["correct", "iou_true_class", "iou_predicted"]), shown


def run_row(name: str, seed: int, model, history: pd.DataFrame, test: dict, gate, found: pd.DataFrame) -> dict:
    """One trained network's row: size, test errors, localization errors (top-1 and GT-known), its gate."""
    hit_gt = found["iou_true_class"] >= 0.5
    hit_top1 = found["correct"] & (found["iou_predicted"] >= 0.5)
    return {
        "network": name, "seed": seed, "map": "CAM" if name in GAP_VARIANTS else "Grad-CAM (conv5)",
        "parameters_M": count_parameters(model) / 1e6, "test_top1_err": 100 * (1 - test["top1"]),
        "test_top5_err": 100 * (1 - test["top5"]),
        "train_top1_last_epoch": 100 * float(history.iloc[-1]["train_top1"]),
        "boxed_test_images": len(found),
        "loc_err_top1": 100 * (1 - float(hit_top1.mean())) if len(found) else np.nan,
        "loc_err_gt_known": 100 * (1 - float(hit_gt.mean())) if len(found) else np.nan,
        "train_seconds": float(history["seconds"].sum()),  # from the history: true even when reloaded
        "trained_enough": gate.passed, "gate": gate.reason,
    }


def summary_table(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per network: each error as its mean over seeds with a 95 % t interval (n = seeds)."""
    rows = []
    for name, group in runs.groupby("network", sort=False):
        row = {"network": name, "map": group["map"].iloc[0],
               "parameters_M": round(float(group["parameters_M"].iloc[0]), 2)}
        for column in ("test_top1_err", "test_top5_err", "loc_err_top1", "loc_err_gt_known"):
            values = group[column].dropna()
            row[column] = t_mean(values).format(1) if len(values) else "-"
        row["boxed_test_images"] = int(group["boxed_test_images"].iloc[0])
        row["paper_top1_err_imagenet"] = PAPER_TOP1_ERR.get(name, np.nan)
        rows.append(row)
    return pd.DataFrame(rows)


def seed_differences(runs: pd.DataFrame, worse: str, better: str, column: str = "test_top1_err") -> np.ndarray:
    """Per seed, ``column`` of ``worse`` minus that of ``better`` (seeds where both ran)."""
    wide = runs.pivot(index="seed", columns="network", values=column)[[worse, better]].dropna()
    return (wide[worse] - wide[better]).to_numpy()


MIN_SEEDS = 5  # fewer training seeds decide only when the interval already does
SCRATCH_NO_CONTROL = ("not applicable: every network trains from a random initialization (the control is that "
                      "initialization); the trained-enough gate judges the training")
SCRATCH_RULES = ("\n\nRules: reproduced when the 95 % t interval over seeds of the per-seed difference lies above 0, "
                 "contradicted at or below 0, inconclusive when it includes 0 (fewer than 5 seeds: the reason says "
                 "n < 5). The old rule read 'not reproduced' whenever the interval was not wholly above 0.")


def table1_claims(runs: pd.DataFrame, gate=None) -> list[Claim]:
    """The paper's Table 1 orderings, each decided on the t interval over seeds of the per-seed paired difference in
    top-1 error (``Threshold(0, min_n=MIN_SEEDS)``); "not comparable (undertrained: ...)" when ``gate`` (the runs'
    trained-enough gate) failed."""
    ran = list(runs["network"].unique())
    rule = Threshold(0.0, min_n=MIN_SEEDS)

    def claim(text, paper_number, baseline, worse, better):
        evidence = Evidence("t_mean", (seed_differences(runs, worse, better),), rule, claim_seed("Table 1", text))
        est = evidence.estimate()
        return gated(decided("Zhou et al. 2016", "Table 1", text, paper_number, est.format(1), est.n, baseline,
                             rule.text(f"the per-seed difference {worse} minus {better} in top-1 error (points; same "
                                       "split, same seed; t over seeds)"), [evidence]), gate)

    claims = []
    for base in [n for n in ran if f"{n}-gap" in ran]:
        paper = PAPER_TOP1_ERR.get(f"{base}-gap", np.nan) - PAPER_TOP1_ERR.get(base, np.nan)
        claims.append(claim(f"GAP costs {base} some top-1 accuracy",
                            f"{paper:+.1f} points (ImageNet)" if np.isfinite(paper) else "qualitative",
                            "0 points (GAP costs nothing)", f"{base}-gap", base))
    if {"alexnet-gap", "alexnet*-gap"} <= set(ran):
        claims.append(claim("AlexNet*-GAP (two added convs) recovers part of AlexNet-GAP's cost",
                            f"{PAPER_TOP1_ERR['alexnet-gap'] - PAPER_TOP1_ERR['alexnet*-gap']:+.1f} points (ImageNet "
                            f"{PAPER_TOP1_ERR['alexnet-gap']} -> {PAPER_TOP1_ERR['alexnet*-gap']}% error)",
                            "0 points (the extra conv recovers nothing)", "alexnet-gap", "alexnet*-gap"))
    return claims


# ---------------------------------------------------------------- the miniature's notes


def init_text(recipe) -> str:
    if recipe.paper_init:
        return "weights N(0, 0.01)"
    if not recipe.kaiming_init:
        return "PyTorch's default init"
    linear = "" if recipe.linear_init_std is None else f" (fc layers N(0, {recipe.linear_init_std:g}))"
    return f"He init{linear}"


def scratch_notes(recipe, n_train: int, n_val: int, n_test: int, n_classes: int, boxed_categories: bool,
                  train_per_class, test_per_class, val_per_class: int, input_size: int, seeds, split_seed: int,
                  threshold: float, smoke: bool) -> str:
    """The notes of the miniature's tables: data, split, budget, what carries over from the paper."""
    return (
        f"All networks trained from scratch on Caltech-101 ({n_classes} classes"
        f"{': the categories with boxes' if boxed_categories else ''}, {n_train} training / {n_val} validation / "
        f"{n_test} test images: {train_per_class} training per class, and of up to "
        f"{test_per_class} held-out per class {val_per_class} for validation (the learning-rate "
        f"plateau only) and the rest for test (every reported number)) at {input_size} px, seeds "
        f"{list(seeds)} (the seed sets the initialization and sample order; one split, from seed {split_seed}); "
        "errors are means over seeds with a 95 % t interval (n = seeds). The same budget: "
        f"{recipe.epochs} epochs, batch {recipe.batch_size}, SGD lr "
        f"{recipe.lr} momentum {recipe.momentum} wd {recipe.weight_decay}, {init_text(recipe)}. The paper fine-tunes "
        "ImageNet networks and reports ImageNet errors (paper column): the comparison to carry over is the ordering "
        "(GAP costs a few points, AlexNet-GAP most, AlexNet*-GAP recovers part), not the values. Localization on the "
        "test images that have boxes (boxes mapped through the resize and centre crop): "
        "loc_err_top1 counts a wrong class or IoU < 0.5 (the paper's top-1 localization error); loc_err_gt_known "
        f"uses the true class's map. Box rule: largest connected component above {threshold:g} of the "
        "map's maximum. A short CPU run from scratch: accuracies are far below those of ImageNet-trained networks."
        + smoke_note(smoke, "2 training, 1 validation and 1 test image per class")
    )


def chance_warning(runs: pd.DataFrame, n_classes: int) -> str:
    chance_err = 100 * (1 - 5 / n_classes)  # a top-1 error above this is within 5x of guessing
    mean_err = runs.groupby("network", sort=False)["test_top1_err"].mean()
    at_chance = [name for name, err in mean_err.items() if err > chance_err]
    return (f"\n\nAt this budget {', '.join(at_chance)} stayed near chance (mean top-1 error > {chance_err:.1f}%, "
            f"chance {100 * (1 - 1 / n_classes):.1f}%): their accuracy and top-1 localization say nothing about "
            "the architecture yet; run longer (experiment.train.epochs, dataset.train_per_class) for the "
            "paper's comparison.") if at_chance else ""
