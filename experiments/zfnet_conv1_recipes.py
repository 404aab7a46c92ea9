"""The search for CPU recipes under which ZF Fig. 6's conv1 arms learn (both trained-enough gates of ``cnnvis.gate``).

Each recipe is a named set of changes to the CPU preset (data: classes and training images per class; input size,
channel width, epochs, learning rate, weight decay, batch, ZF's filter renormalization). For every recipe, conv1 arm
and seed it trains the network (resuming a finished or interrupted run from its checkpoint folder) and after every
epoch records the training minutes so far, the training loss and top-1, the held-out top-1 and the filter-structure
statistic of conv1's change from its initialization: the share of filters whose W - W0 is more spectrally
concentrated than 95 % of white noise of that shape and at least half as large as W0 (white noise scores about
0.05; the filter gate needs the share's 95 % lower bound above 0.20). A run passes when both gates pass at its end.
Written: every epoch of every run (``curves``), each run's end with its gates (``runs``), the curves against
training minutes (``recipe_curves.png``) and each recipe's conv1 filters beside their change from initialization.
"""

from dataclasses import dataclass, field, fields, replace
from typing import Any, Optional

import pandas as pd
import torch
from omegaconf import OmegaConf

from cnnvis.ablations import CONV1_ARMS, CONV1_LABELS, conv1_variant, first_conv
from cnnvis.config import ExperimentConfig
from cnnvis.from_config import train_val_test_sets, train_variant, variant_dir
from cnnvis.gate import filter_structure
from cnnvis.plotting.training import filter_change_grid, recipe_curves
from cnnvis.run_gate import initial_model, run_gate
from cnnvis.shards import write_atomically
from cnnvis.training import TrainConfig, as_train_config, evaluate, smoke_recipe

MODEL_KINDS = None  # trains its own networks (experiment.arms) at each recipe's input size: model= is not read


@dataclass
class Recipe:
    """One recipe's changes to the CPU preset (conf/preset/zfnet_cpu.yaml); None keeps the preset's value."""

    classes: Optional[int] = None  # the N largest Caltech-101 classes; 0: all 101
    train_per_class: Optional[int] = None  # at most; the held-out images per class stay dataset.test_per_class
    input_size: Optional[int] = None
    width: Optional[float] = None
    epochs: Optional[int] = None
    lr: Optional[float] = None
    weight_decay: Optional[float] = None
    batch_size: Optional[int] = None
    plateau_patience: Optional[int] = None  # epochs without a lower validation loss before the lr drops tenfold
    filter_rms: Optional[float] = None  # ZF's renormalization cap; 0: off
    paper_init: Optional[bool] = None  # ZF's N(0, 1e-2) weights instead of He's (whose conv1 is ~10x larger)
    conv1_init_std: Optional[float] = None  # conv1 alone from N(0, std), the other layers He's; 0: He's conv1
    seeds: Optional[list[int]] = None  # None: experiment.seeds (a promising recipe gets more)


@dataclass
class Config(ExperimentConfig):
    train: TrainConfig = field(default_factory=TrainConfig)  # the preset's recipe
    classes: Optional[int] = 10  # the preset's: the N largest classes (None: all)
    width: float = 0.25  # the preset's channel multiplier
    recipes: dict[str, Any] = field(default_factory=dict)  # name: Recipe's fields (checked); the yaml lists the search
    run_only: Optional[list[str]] = None  # these recipes of experiment.recipes, in this order (None: all); add one
    # with +experiment.recipes.NAME={lr:0.03}
    seeds: list[int] = field(default_factory=lambda: [0])
    arms: list[str] = field(default_factory=lambda: ["alexnet_conv1", "zfnet"])
    checkpoint_root: str = "${oc.env:CNNVIS_CHECKPOINTS,data/checkpoints}"
    val_per_class: int = 5  # held-out images per class for the lr plateau; the rest are the reported test images


@dataclass(frozen=True)
class Resolved:
    """A recipe with the preset's values filled in."""

    classes: Optional[int]
    train_per_class: int
    input_size: int
    width: float
    train: TrainConfig
    seeds: list[int]

    def __str__(self):
        t = self.train
        return (f"seeds {self.seeds}, {self.classes or 'all'} classes x <= {self.train_per_class} images, "
                f"{self.input_size} px, width x{self.width:g}, {t.epochs} epochs, batch {t.batch_size}, lr {t.lr:g} "
                f"(/10 after {t.plateau_patience} epochs without a lower val loss), weight decay {t.weight_decay:g}, "
                f"filter RMS cap {t.filter_rms or 'off'}, {'N(0, 1e-2)' if t.paper_init else 'He'} init"
                + (f" (conv1 N(0, {t.conv1_init_std:g}))" if t.conv1_init_std is not None else ""))


def recipe_of(name: str, fields_given) -> Recipe:
    """A recipe from its config entry; a key that is not one of Recipe's fields fails naming the valid ones."""
    given = OmegaConf.to_container(fields_given) if OmegaConf.is_config(fields_given) else dict(fields_given or {})
    unknown = sorted(set(given) - {f.name for f in fields(Recipe)})
    if unknown:
        raise KeyError(f"experiment.recipes.{name} sets {unknown}; a recipe's keys are "
                       f"{', '.join(f.name for f in fields(Recipe))}")
    return Recipe(**given)


def resolve(cfg, recipe: Recipe) -> Resolved:
    e = cfg.experiment

    def given(value, preset):
        return preset if value is None else value

    changes = {k: getattr(recipe, k) for k in ("epochs", "lr", "weight_decay", "batch_size", "plateau_patience")
               if getattr(recipe, k) is not None}
    if recipe.filter_rms is not None:
        changes["filter_rms"] = recipe.filter_rms or None
    if recipe.paper_init is not None:
        changes["paper_init"] = recipe.paper_init
    if recipe.conv1_init_std is not None:
        changes["conv1_init_std"] = recipe.conv1_init_std or None
    classes = e.classes if recipe.classes is None else (recipe.classes or None)
    return Resolved(classes, given(recipe.train_per_class, cfg.dataset.train_per_class),
                    given(recipe.input_size, cfg.model.input_size), given(recipe.width, e.width),
                    replace(as_train_config(e.train), **changes), list(recipe.seeds or e.seeds))


def recipe_config(cfg, recipe: Resolved):
    """The run's config with one recipe's data and input size (a copy: the glue's config stays as it was)."""
    local = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    local.dataset.train_per_class = recipe.train_per_class
    local.model.input_size = recipe.input_size
    return local


def train_one(local, record, name: str, recipe: Resolved, arm: str, seed: int, data) -> tuple[pd.DataFrame, dict, dict]:
    """Train one (recipe, arm, seed) under ``local`` (``recipe_config``): its per-epoch curve, its end row with the
    gates, and its conv1 (W, W - W0)."""
    images, train_set, val_set, test_set = data
    n_classes = len(images.classes)
    train = smoke_recipe(recipe.train, local.smoke)

    def build():
        return conv1_variant(arm, n_classes, recipe.input_size, recipe.width)

    w0 = first_conv(initial_model(build, train, seed)).weight.detach().clone()
    tag, trained = f"recipe-{name}-{arm}", {}
    # each epoch's row is kept beside the checkpoint, so a resumed or finished run keeps its whole curve
    curve_file = variant_dir(build(), tag, local, val_set, train, seed, recipe.classes) / "recipe_curve.csv"

    def build_and_keep():
        trained["model"] = build()
        return trained["model"]

    def after_epoch(history: pd.DataFrame) -> None:
        model = trained["model"]
        structure = filter_structure(first_conv(model).weight, w0)
        with torch.random.fork_rng(devices=[]):  # the evaluation's loader draws a seed: training's RNG must not move
            test = evaluate(model, test_set, next(model.parameters()).device)
        model.train()  # fit goes on training
        last = history.iloc[-1]
        row = {"epoch": int(last.epoch), "train_minutes": float(history.seconds.sum()) / 60,
               "train_loss": float(last.train_loss), "train_top1": float(last.train_top1), "test_top1": test["top1"],
               "structured_share": float(structure.structured.mean()),
               "median_concentration_change": float(structure.concentration_change.median())}
        earlier = pd.read_csv(curve_file) if curve_file.exists() else pd.DataFrame(columns=list(row))
        rows = pd.concat([earlier[earlier.epoch < row["epoch"]], pd.DataFrame([row])], ignore_index=True)
        curve_file.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(curve_file, lambda tmp: rows.to_csv(tmp, index=False))

    model, history, _ = train_variant(build_and_keep, tag, local, record, train_set, val_set, train, seed,
                                      recipe.classes, on_epoch_end=after_epoch)
    model.cpu().eval()
    test = evaluate(model, test_set, torch.device("cpu"))
    gate, structure = run_gate(history, test["top1"], len(test_set), n_classes, first_conv(model).weight, w0,
                               CONV1_LABELS[arm])
    keys = {"recipe": name, "arm": CONV1_LABELS[arm], "seed": seed}
    end = {**keys, "epochs": len(history), "train_minutes": float(history.seconds.sum()) / 60,
           "train_top1": float(history.train_top1.iloc[-1]), "test_top1": test["top1"], "test_images": len(test_set),
           "structured_share": float(structure.structured.mean()), "passed": gate.passed, "gate": gate.reason}
    curve = (pd.read_csv(curve_file) if curve_file.exists() else  # trained before curves were kept: its end alone
             pd.DataFrame([{k: end[k] for k in ("epochs", "train_minutes", "train_top1", "test_top1",
                                                "structured_share")}]).rename(columns={"epochs": "epoch"}))
    w = first_conv(model).weight.detach()
    return curve.assign(**keys), end, {"W": w, "W - W0": w - w0}


def main(cfg, out, record):
    e = cfg.experiment
    for arm in e.arms:
        if arm not in CONV1_ARMS:
            raise KeyError(f"unknown conv1 arm {arm!r}; choose from {', '.join(CONV1_ARMS)} (experiment.arms)")
    names = list(e.run_only if e.run_only is not None else e.recipes)
    unknown = [name for name in names if name not in e.recipes]
    if unknown or not names:
        raise KeyError(f"experiment.run_only names {unknown or 'no recipe'}; the recipes are {', '.join(e.recipes)} "
                       f"(add one with +experiment.recipes.NAME={{lr:0.03}})")
    recipes = {name: resolve(cfg, recipe_of(name, e.recipes[name])) for name in names}
    curves, ends, filters = [], [], {}
    for name, recipe in recipes.items():
        seeds = recipe.seeds[:1] if cfg.smoke else recipe.seeds
        local = recipe_config(cfg, recipe)
        data = train_val_test_sets(local, record, recipe.classes, val_per_class=e.val_per_class)
        for arm in e.arms:
            for seed in seeds:
                curve, end, weights = train_one(local, record, name, recipe, arm, seed, data)
                curves.append(curve)
                ends.append(end)
                if seed == seeds[0]:
                    filters[f"{name}, {CONV1_LABELS[arm]} (seed {seed}, {end['epochs']} epochs)"] = weights
    curves, ends = pd.concat(curves, ignore_index=True), pd.DataFrame(ends)
    described = "; ".join(f"{name}: {recipe}" for name, recipe in recipes.items())
    out.table(curves, "curves", title="conv1 recipe search: every epoch of every run",
              notes=f"Recipes (changes to conf/preset/zfnet_cpu.yaml): {described}. "
                    "train_minutes: wall-clock training time so far (evaluation excluded); test_top1: the held-out "
                    "images not used for the lr plateau; structured_share: cnnvis.gate.filter_structure on conv1's "
                    "W - W0 (white noise ~0.05; the filter gate needs the 95 % lower bound > 0.20).")
    out.table(ends, "runs", title="conv1 recipe search: each run's end and its trained-enough gates",
              notes="passed: the training gate (converged, held-out top-1 clearly above chance) and the filter gate "
                    "of that run's conv1 both pass.")
    out.figure(recipe_curves(curves, "conv1 recipe search on Caltech-101 (ZFNet with AlexNet's or ZF's conv1, "
                                     "trained from scratch on this CPU); one line per seed"), "recipe_curves")
    out.figure(filter_change_grid(filters, "conv1 filters after training (W) and their change from initialization "
                                           "(W - W0), per recipe and arm (first seed); each tile scaled on its own"),
               "recipe_filters")
    return {"runs": len(ends), "runs_passed": int(ends.passed.sum())}
