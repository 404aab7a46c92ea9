"""Zeiler & Fergus 2013 Table 3: ZFNet with layers removed, fc6/fc7 resized and conv3-5 widened.

Every variant is trained from scratch with the same recipe, data and budget; reported as error % (train
top-1, validation top-1 and top-5) beside the paper's ImageNet numbers, and as the change from the base model,
which the paper's claims are about (removing 6,7 costs little, removing 3,4,6,7 costs a lot, widening conv3-5
helps, resizing fc6/fc7 makes little difference), each decided over seeds (``cnnvis.ablations.table3_claims``).
"""

from dataclasses import dataclass, field
from typing import Optional

import pandas as pd
from scipy.stats import spearmanr

from cnnvis.ablations import (ARCH_VARIANTS, PAPER_TABLE3, arch_summary_table, arch_variant, paper_delta,
                              table3_claims)
from cnnvis.claims import with_control
from cnnvis.config import ExperimentConfig
from cnnvis.from_config import train_val_test_sets, train_variant
from cnnvis.gate import figure_note, gate_rows, training_gate
from cnnvis.plotting.training import ablation_bars, seed_training_curves
from cnnvis.stats import t_mean
from cnnvis.training import TrainConfig, evaluate, smoke_recipe


MODEL_KINDS = None  # trains its own ZFNet variants at model.input_size: model= is not read
NO_CONTROL = ("not applicable: every variant trains from a random initialization and is compared with the base "
              "trained alike; the trained-enough gate judges the training")
RULE_CHANGE = (" Rules: each claim is decided on the 95 % t interval over seeds of the per-seed change from the base "
               "(reproduced where the interval lies on the paper's side of its bar, contradicted where it lies wholly "
               "on the other, inconclusive where it includes the bar; fewer than 5 seeds: the reason says n < 5). The "
               "old rule read 'not reproduced' whenever the interval was not wholly on the paper's side, e.g. "
               "-2.7 [-28.1, 22.7] (n = 2) against the +5-point bar; the widening and fc6/fc7-resizing claims are new.")


@dataclass
class Config(ExperimentConfig):
    train: TrainConfig = field(default_factory=TrainConfig)
    classes: Optional[int] = 10  # the N largest classes of the dataset (None: all)
    width: float = 1.0  # channel multiplier of every layer and fc width (the CPU preset: 0.25)
    variants: list[str] = field(default_factory=lambda: list(ARCH_VARIANTS))
    seeds: list[int] = field(default_factory=lambda: [0, 1])
    val_per_class: int = 5  # held-out images per class for the lr plateau; the rest are the reported test images
    checkpoint_root: str = "${oc.env:CNNVIS_CHECKPOINTS,data/checkpoints}"


def main(cfg, out, record):
    e = cfg.experiment
    unknown = [v for v in e.variants if v not in ARCH_VARIANTS]
    if unknown:
        raise KeyError(f"unknown variant(s) {', '.join(unknown)}; choose from {', '.join(ARCH_VARIANTS)}")
    if "base" not in e.variants:
        raise ValueError("experiment.variants must include 'base' (the reference every change is measured from)")
    if not e.seeds:
        raise ValueError("experiment.seeds is empty: give at least one training seed, e.g. experiment.seeds=[0,1]")
    images, train_set, val_set, test_set = train_val_test_sets(cfg, record, e.classes, val_per_class=e.val_per_class)
    recipe = smoke_recipe(e.train, cfg.smoke)
    n_classes, size = len(images.classes), cfg.model.input_size
    rows, histories = [], {}
    for variant in e.variants:
        for seed in e.seeds:
            model, history, _ = train_variant(lambda: arch_variant(variant, n_classes, size, e.width),
                                              "zfnet" if variant == "base" else f"zfnet-{variant}", cfg,
                                              record, train_set, val_set, recipe, seed, e.classes)
            test = evaluate(model, test_set, next(model.parameters()).device)
            gate = training_gate(history, round(test["top1"] * len(test_set)), len(test_set), n_classes)
            rows.append({"variant": variant, "seed": seed, "params_M": sum(p.numel() for p in model.parameters()) / 1e6,
                         "train_top1_err": 100 * (1 - history.iloc[-1].train_top1),
                         "test_top1_err": 100 * (1 - test["top1"]), "test_top5_err": 100 * (1 - test["top5"]),
                         "train_seconds": history.seconds.sum(), "trained_enough": gate.passed, "gate": gate.reason})
            histories.setdefault(variant, []).append(history)
    runs = pd.DataFrame(rows)
    gate = gate_rows(runs, "{variant} seed {seed}")
    runs["test_top1_err_change"] = runs.test_top1_err - runs.seed.map(
        runs[runs.variant == "base"].set_index("seed").test_top1_err)  # paired: same seed, same test images
    changes = {v: g.test_top1_err_change.to_numpy() for v, g in runs.groupby("variant", sort=False)}
    table = arch_summary_table(runs, changes)
    means = pd.Series({v: float(c.mean()) for v, c in changes.items()})
    changed = [v for v in table.variant if v != "base"]
    rho = float(spearmanr(means[changed], [paper_delta(v) for v in changed]).statistic) \
        if len(changed) > 2 else float("nan")
    scale = (f"Ours: {n_classes} largest Caltech-101 classes, {len(train_set)} training / {len(val_set)} validation "
             f"(the learning-rate plateau only) / {len(test_set)} test images (every reported error), {size} px, "
             f"channel width x{e.width}, {recipe.epochs} epochs, seeds {list(e.seeds)}: errors are means over seeds "
             f"with a 95 % t interval (n = seeds); a change is the per-seed difference from the base on the same "
             f"seed and test images. Paper: ImageNet 2012 (1.2M training images, 1000 classes), 224 px, ~70 "
             f"epochs; its removal rows were run on its replication of Krizhevsky et al. (val top-1 error "
             f"{PAPER_TABLE3['paper_alexnet_base'][2]}%), its resizing rows on its Fig. 3 model "
             f"({PAPER_TABLE3['base'][2]}%): `*_change` columns are measured from each row's own base. Spearman rank "
             f"correlation of our mean and the paper's top-1 changes over the {len(changed)} variants: {rho:.2f}. "
             f"One test image is {100 / len(test_set):.1f} points.")
    out.table(table, "table3", title="ZF Table 3: architecture ablations (error %)", notes=scale)
    out.table(runs, "runs", title="ZF Table 3 ablation: every run", notes=scale)
    base_err = t_mean(runs[runs.variant == "base"].test_top1_err)
    out.claims(with_control(table3_claims(changes, base_err, gate), None, NO_CONTROL), "claims",
               title="ZF Table 3: the paper's claims, decided over seeds", notes=scale + RULE_CHANGE)
    out.figure(ablation_bars(list(table.variant), [changes[v] for v in table.variant],
                             list(table.paper_val_top1_err_change),
                             "Change in top-1 error from the base model (percentage points; ours: test split, mean "
                             f"over seeds){figure_note(gate)}", "top-1 error change (points)"), "table3_changes")
    out.figure(seed_training_curves(histories, f"Training curves of the Table 3 variants{figure_note(gate)}"), "curves")
    mean_err = runs.groupby("variant", sort=False).test_top1_err.mean()
    return {"trained_enough": int(gate.passed), "spearman_test_top1_change": rho, "base_test_top1_err": float(mean_err["base"]),
            **{f"{v}_test_top1_err": float(err) for v, err in mean_err.items()}}
