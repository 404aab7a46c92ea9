"""The training recipe (``TrainConfig``, also a Hydra structured-config node) and the papers' initializations
and filter renormalization that ``fit`` applies."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Optional

import torch
from torch import nn


PAPER_KEEP_EPOCHS = (1, 2, 5, 10, 20, 30, 40, 64)  # Zeiler & Fergus Fig. 4 (of a 70-epoch run)
PAPER_EPOCHS = 64


@dataclass
class TrainConfig:
    """The training recipe (also a Hydra structured-config node)."""

    epochs: int = 10
    batch_size: int = 64  # global: split over the processes of a distributed run
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    plateau_factor: float = 0.1  # lr *= factor when val loss stops improving
    plateau_patience: int = 1
    paper_init: bool = False  # ZF: weights N(0, 1e-2), biases 0
    filter_rms: Optional[float] = None  # ZF: 0.1 -> renormalize conv filters whose RMS exceeds it
    ten_crop: bool = False  # final validation by 10 crops (corners + centre, and their flips)
    keep_epochs: Optional[list[int]] = None  # None: the paper's 1,2,5,10,20,30,40,64 scaled to `epochs`
    num_workers: int = 2
    amp: bool = True  # GPU only
    channels_last: bool = True  # GPU only
    trainable: Optional[list[str]] = None  # None: all params; else only params whose name starts with a prefix
    checkpoint_every: int = 0  # also write last.pt every N optimizer steps (0: only at epoch ends)
    eval_batch_size: int = 128
    kaiming_init: bool = False  # He et al. 2015 (normal, fan-in, ReLU gain), biases 0; ignored with paper_init
    linear_init_std: Optional[float] = None  # with kaiming_init: Linear weights N(0, std) instead (torchvision's VGG)
    conv1_init_std: Optional[float] = None  # then the first conv's weights N(0, std): a W0 small beside what training
    # adds leaves the learned filters visible in W (He's conv1 is larger than its change over a CPU run)


def scaled_keep_epochs(epochs: int) -> list[int]:
    """The paper's kept epochs 1, 2, 5, 10, 20, 30, 40, 64 mapped onto a run of ``epochs`` (deduplicated)."""
    return sorted({min(epochs, max(1, round(e * epochs / PAPER_EPOCHS))) for e in PAPER_KEEP_EPOCHS})


def paper_init_(model: nn.Module, std: float = 1e-2) -> None:
    """Zeiler & Fergus: every conv and linear weight N(0, std), every bias 0."""
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def kaiming_init_(model: nn.Module, linear_std: Optional[float] = None) -> None:
    """He et al. 2015: keeps the signal's scale through deep ReLU stacks without normalization layers, where
    N(0, 1e-2) (and PyTorch's default) shrink it layer after layer and a short run never starts learning.
    ``linear_std`` draws Linear weights from N(0, linear_std) instead: a wide fc head (AlexNet's 9216-4096-4096)
    under He init starts with logits so large that the first steps at lr 1e-2 kill every ReLU."""
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            if isinstance(m, nn.Linear) and linear_std is not None:
                nn.init.normal_(m.weight, 0.0, linear_std)
            else:
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)


@torch.no_grad()
def init_weights_(model: nn.Module, cfg: "TrainConfig") -> None:
    """The recipe's initialization (``paper_init``, else ``kaiming_init``, then ``conv1_init_std``), as ``fit`` does
    it after seeding; leaves the model's own init when the recipe names none."""
    if cfg.paper_init:
        paper_init_(model)
    elif cfg.kaiming_init:
        kaiming_init_(model, cfg.linear_init_std)
    if cfg.conv1_init_std is not None:
        first = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
        nn.init.normal_(first.weight, 0.0, cfg.conv1_init_std)


@torch.no_grad()
def renormalize_filters_(model: nn.Module, max_rms: float) -> int:
    """Rescale every conv filter whose RMS exceeds ``max_rms`` back to it; returns how many were rescaled."""
    count = 0
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            rms = m.weight.pow(2).mean(dim=(1, 2, 3), keepdim=True).sqrt()
            scale = (max_rms / rms).clamp(max=1.0)
            m.weight.mul_(scale)
            count += int((scale < 1).sum())
    return count


def as_train_config(cfg) -> TrainConfig:
    """A TrainConfig from itself, a Hydra/OmegaConf node of one, or a dict."""
    if isinstance(cfg, TrainConfig):
        return cfg
    from omegaconf import DictConfig, OmegaConf

    if isinstance(cfg, DictConfig):
        cfg = OmegaConf.to_container(cfg, resolve=True)
    return TrainConfig(**cfg)


def smoke_recipe(cfg: TrainConfig, smoke: bool) -> TrainConfig:
    """``smoke=true``: 2 epochs, no loader workers (the run ends in seconds)."""
    cfg = as_train_config(cfg)
    if not smoke:
        return cfg
    return replace(cfg, epochs=min(cfg.epochs, 2), num_workers=0, keep_epochs=None)
