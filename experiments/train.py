"""Train any model of the harness on a dataset split (Zeiler & Fergus / Krizhevsky recipe as options).

Checkpoints go to ``<checkpoint_root>/<model>_<dataset>-<hash of architecture, data, recipe, seed>/``
(``last.pt`` every epoch, ``epoch_NNN.pt`` for the kept epochs); the same command resumes a killed run.
The final weights are also exported to a stable path (``export``) for other experiments' figures.
The run is judged by the trained-enough gate (``cnnvis.run_gate``: converged, validation top-1 clearly above chance,
conv1's change from its initial weights structured beyond white noise); metrics, titles and notes carry it.
Under ``torchrun --nproc_per_node=N run.py experiment=train ...`` it trains with DistributedDataParallel.
"""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from cnnvis.ablations import build_model_at_width, first_conv
from cnnvis.config import ExperimentConfig
from cnnvis.from_config import train_val_sets, train_variant
from cnnvis.gate import figure_note, write_gate
from cnnvis.models import CNN
from cnnvis.plotting.training import filter_change_grid, training_curves
from cnnvis.run_gate import initial_model, run_gate
from cnnvis.run_record import trained_by
from cnnvis.training import TrainConfig, is_main_process, save_atomic, smoke_recipe


MODEL_KINDS = [CNN]  # the networks it runs (cnnvis.config.check_model_kind)


@dataclass
class Config(ExperimentConfig):
    train: TrainConfig = field(default_factory=TrainConfig)
    classes: Optional[int] = None  # the N largest classes of the dataset (None: all)
    width: float = 1.0  # zfnet / alexnet from scratch: channel multiplier (the CPU preset: 0.25)
    checkpoint_root: str = "${oc.env:CNNVIS_CHECKPOINTS,data/checkpoints}"
    export: Optional[str] = None  # final weights; None: <checkpoint_root>/<model>_<dataset>/last.pt


def recipe_notes(cfg, n_train: int, n_val: int, n_classes: int) -> str:
    t = smoke_recipe(cfg.experiment.train, cfg.smoke)
    return (f"{cfg.model.name} from {'ImageNet weights' if cfg.model.pretrained else 'scratch'} on {cfg.dataset.name}: "
            f"{n_classes} classes, {n_train} training / {n_val} validation images, {cfg.model.input_size} px crops "
            f"(random crop + flip from {cfg.dataset.resize or round(cfg.model.input_size * 256 / 224)} px), "
            f"{t.epochs} epochs, batch {t.batch_size}, SGD lr {t.lr} (x{t.plateau_factor} after {t.plateau_patience} "
            f"epoch(s) without a lower val loss), momentum {t.momentum}, weight decay {t.weight_decay}, "
            f"{'N(0, 1e-2) weights' if t.paper_init else 'He-normal weights' if t.kaiming_init else 'PyTorch default init'}"
            f"{f' (conv1 N(0, {t.conv1_init_std:g}))' if t.conv1_init_std is not None else ''}, "
            f"conv filter RMS cap {t.filter_rms}, {'10-crop' if t.ten_crop else 'centre-crop'} final validation.")


def main(cfg, out, record):
    t = smoke_recipe(cfg.experiment.train, cfg.smoke)
    images, train_set, val_set = train_val_sets(cfg, record, cfg.experiment.classes)  # data first
    n_classes = len(images.classes)
    m = cfg.model
    width = f", width x{cfg.experiment.width}" if cfg.experiment.width != 1 else ""
    title = f"{m.name} on {cfg.dataset.name} ({n_classes} classes, {m.input_size} px{width})"

    def progress(history):
        history.to_csv(out.dir / "metrics.csv", index=False)

    def build():
        return build_model_at_width(m.name, n_classes, m.input_size, cfg.experiment.width, m.pretrained, m.checkpoint)

    model, history, ckpt = train_variant(build, m.name, cfg, record, train_set, val_set, t, cfg.seed,
                                         cfg.experiment.classes, on_epoch_end=progress)
    if not is_main_process():
        return {}
    if m.checkpoint:
        record.add_checkpoint(m.checkpoint)  # the starting weights
    conv = first_conv(model)
    w, w0 = conv.weight.detach().cpu(), first_conv(initial_model(build, t, cfg.seed)).weight.detach()
    gate, structure = run_gate(history, float(history.val_top1.iloc[-1]), len(val_set), n_classes, w, w0,
                               f"{m.name} conv1")
    write_gate(ckpt, gate)  # beside the weights, for the figures that show them (filters, zfnet_deconv)
    export = cfg.experiment.export or f"{cfg.experiment.checkpoint_root}/{m.name}_{cfg.dataset.name}/last.pt"
    save_atomic({"model": model.state_dict(), "classes": list(images.classes), "input_size": m.input_size}, export,
                trained_by(ckpt / "last.pt"))  # last.pt's weights: trained by its runs
    record.add_checkpoint(export)
    write_gate(Path(export).parent, gate)
    out.table(history, "metrics", title=f"Training {title}",
              notes=recipe_notes(cfg, len(train_set), len(val_set), n_classes)
              + f"\n\nCheckpoints: `{ckpt}` (kept epochs {sorted(p.name for p in ckpt.glob('epoch_*.pt'))}); "
                f"final weights: `{export}`.\n\nTrained-enough gate (cnnvis.gate; held-out: the validation images, "
                f"which also set the lr plateau): {'passed' if gate.passed else 'FAILED'}: {gate.reason}.")
    out.table(structure, "conv1_filter_structure", title=f"{m.name} conv1: spectral concentration of W - W0 against "
              "white noise of the same shape (per filter)")
    out.figure(training_curves({m.name: history}, f"Training {title}{figure_note(gate)}"), "curves")
    shape = f"{conv.out_channels} filters {conv.kernel_size[0]}x{conv.kernel_size[1]}/{conv.stride[0]}"
    out.figure(filter_change_grid({f"{m.name} conv1 ({shape})": {"W": w, "W - W0": w - w0}},
                                  f"{m.name} conv1 after {len(history)} epochs beside its change from initialization "
                                  f"W - W0{figure_note(gate)}"), "conv1_filters")
    last = history.iloc[-1]
    return {"trained_enough": int(gate.passed), "val_top1": float(last.val_top1), "val_top5": float(last.val_top5), "train_top1": float(last.train_top1),
            "epochs": int(last.epoch), "train_seconds": float(history.seconds.sum())}
