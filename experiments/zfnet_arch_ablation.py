"""Zeiler & Fergus 2013 Table 3: ZFNet with layers removed, fc6/fc7 resized and conv3-5 widened.

Every variant is trained from scratch with the same recipe, data and budget; reported as error % (train
top-1, validation top-1 and top-5) beside the paper's ImageNet numbers, and as the change from the base model,
whose ranking is the paper's claim (removing 6,7 costs little, removing 3,4,6,7 costs a lot).
"""

from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

from cnnvis.ablations import ARCH_VARIANTS, PAPER_TABLE3, arch_variant
from cnnvis.config import ExperimentConfig
from cnnvis.plotting.training import ablation_bars, training_curves
from cnnvis.training import TrainConfig, smoke_recipe, train_val_sets, train_variant


@dataclass
class Config(ExperimentConfig):
    train: TrainConfig = field(default_factory=TrainConfig)
    classes: Optional[int] = 10  # the N largest classes of the dataset (None: all)
    width: float = 1.0  # channel multiplier of every layer and fc width (the CPU preset: 0.25)
    variants: list[str] = field(default_factory=lambda: list(ARCH_VARIANTS))
    seeds: list[int] = field(default_factory=lambda: [0])
    checkpoint_root: str = "${oc.env:CNNVIS_CHECKPOINTS,data/checkpoints}"


def paper_delta(variant: str) -> float:
    """The paper's change in val top-1 error from the base its row was run on."""
    base = "paper_alexnet_base" if "Krizhevsky" in PAPER_TABLE3[variant][0] else "base"
    return PAPER_TABLE3[variant][2] - PAPER_TABLE3[base][2]


def main(cfg, out):
    e = cfg.experiment
    unknown = [v for v in e.variants if v not in ARCH_VARIANTS]
    if unknown:
        raise KeyError(f"unknown variant(s) {', '.join(unknown)}; choose from {', '.join(ARCH_VARIANTS)}")
    if "base" not in e.variants:
        raise ValueError("experiment.variants must include 'base' (the reference every change is measured from)")
    images, train_set, val_set = train_val_sets(cfg, e.classes)  # data first
    recipe = smoke_recipe(e.train, cfg.smoke)
    n_classes, size = len(images.classes), cfg.model.input_size
    rows, histories = [], {}
    for variant in e.variants:
        for seed in e.seeds:
            model, history, _ = train_variant(lambda: arch_variant(variant, n_classes, size, e.width),
                                              "zfnet" if variant == "base" else f"zfnet-{variant}", cfg,
                                              train_set, val_set, recipe, seed, e.classes)
            last = history.iloc[-1]
            rows.append({"variant": variant, "seed": seed, "params_M": sum(p.numel() for p in model.parameters()) / 1e6,
                         "train_top1_err": 100 * (1 - last.train_top1), "val_top1_err": 100 * (1 - last.val_top1),
                         "val_top5_err": 100 * (1 - last.val_top5), "train_seconds": history.seconds.sum()})
            histories[f"{variant} s{seed}"] = history
    runs = pd.DataFrame(rows)
    table = runs.groupby("variant", sort=False).mean(numeric_only=True).drop(columns="seed").reset_index()
    base_err = float(table.loc[table.variant == "base", "val_top1_err"].iloc[0])
    table["val_top1_err_change"] = table.val_top1_err - base_err
    table["paper_row"] = [PAPER_TABLE3[v][0] for v in table.variant]
    table["paper_train_top1_err"] = [PAPER_TABLE3[v][1] for v in table.variant]
    table["paper_val_top1_err"] = [PAPER_TABLE3[v][2] for v in table.variant]
    table["paper_val_top5_err"] = [PAPER_TABLE3[v][3] for v in table.variant]
    table["paper_val_top1_err_change"] = [paper_delta(v) for v in table.variant]
    changed = table[table.variant != "base"]
    rho = float(spearmanr(changed.val_top1_err_change, changed.paper_val_top1_err_change).statistic) \
        if len(changed) > 2 else float("nan")
    scale = (f"Ours: {n_classes} largest Caltech-101 classes, {len(train_set)} training / {len(val_set)} validation "
             f"images, {size} px, channel width x{e.width}, {recipe.epochs} epochs, seeds {list(e.seeds)} (errors averaged over seeds). "
             f"Paper: ImageNet 2012 (1.2M training images, 1000 classes), 224 px, ~70 epochs; its removal rows were run "
             f"on its replication of Krizhevsky et al. (val top-1 error {PAPER_TABLE3['paper_alexnet_base'][2]}%), "
             f"its resizing rows on its Fig. 3 model ({PAPER_TABLE3['base'][2]}%): `*_change` columns are measured "
             f"from each row's own base. Spearman rank correlation of our and the paper's val top-1 changes over the "
             f"{len(changed)} variants: {rho:.2f}." + claims_text(table, 100 / len(val_set)))
    out.table(table, "table3", title="ZF Table 3: architecture ablations (error %)", notes=scale)
    out.table(runs, "runs", title="ZF Table 3 ablation: every run", notes=scale)
    out.figure(ablation_bars(list(table.variant), list(table.val_top1_err_change), list(table.paper_val_top1_err_change),
                             "Change in val top-1 error from the base model (percentage points)",
                             "val top-1 error change (points)"), "table3_changes")
    out.figure(training_curves(histories, "Training curves of the Table 3 variants"), "curves")
    return {"spearman_val_top1_change": rho, "base_val_top1_err": base_err,
            **{f"{v}_val_top1_err": float(err) for v, err in zip(table.variant, table.val_top1_err)}}


def claims_text(table: pd.DataFrame, one_image: float) -> str:
    """The paper's two headline claims of Table 3, checked on our changes, and why ours may differ."""
    change = dict(zip(table.variant, table.val_top1_err_change))
    checks = [("removing layers 6,7 costs little (paper +4.3 points)", "no_fc6_fc7", lambda c: c < 5),
              ("removing layers 3,4,6,7 costs a lot (paper +30.8)", "no_conv3_conv4_fc6_fc7", lambda c: c >= 10)]
    said = [f"{claim}: ours {change[v]:+.1f}, {'yes' if holds(change[v]) else 'no'}"
            for claim, v, holds in checks if v in change]
    if not said:
        return ""
    differs = any(not holds(change[v]) for _, v, holds in checks if v in change)
    return ("\n\nThe paper's claims: " + "; ".join(said) + f". One validation image is {one_image:.1f} points." +
            (" Where ours differ, the likely reason is scale: a few classes and under a thousand images are separated "
             "by a linear classifier on a few conv layers, so fc6/fc7 (most of the parameters) add overfitting rather "
             "than capacity, and the depth the paper needs for 1,000 ImageNet classes is not needed here."
             if differs else ""))
