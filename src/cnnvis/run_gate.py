"""The trained-enough gate of one training run (``cnnvis.gate``'s rules on what ``cnnvis.training`` returns):
its history and held-out accuracy, and where conv1 is shown or judged, conv1's change from the weights the run
started from (rebuilt exactly as ``fit`` initializes them)."""

from __future__ import annotations

from typing import Callable, Optional

import pandas as pd
import torch
from torch import nn

from cnnvis.gate import Gate, combine, filter_gate, filter_structure, training_gate
from cnnvis.training import TrainConfig, as_train_config, init_weights_


def initial_model(build: Callable[[], nn.Module], recipe: TrainConfig, seed: int) -> nn.Module:
    """The model ``train_variant(build, ..., recipe, seed)`` starts training from: built under ``seed``, then
    initialized as ``fit`` does (``init_weights_``, seeded again)."""
    recipe = as_train_config(recipe)
    torch.manual_seed(seed)
    model = build()
    torch.manual_seed(seed)
    init_weights_(model, recipe)
    return model.eval()


def run_gate(history: pd.DataFrame, held_out_top1: float, held_out_n: int, n_classes: int,
             conv1: Optional[torch.Tensor] = None, conv1_init: Optional[torch.Tensor] = None,
             label: str = "conv1") -> tuple[Gate, Optional[pd.DataFrame]]:
    """(the run's gate, conv1's per-filter structure or None): ``training_gate`` on the history and the held-out
    top-1 (a fraction of ``held_out_n`` images), combined with ``filter_gate`` when conv1's weights are given."""
    gate = training_gate(history, round(held_out_top1 * held_out_n), held_out_n, n_classes)
    if conv1 is None:
        return gate, None
    structure = filter_structure(conv1, conv1_init)
    return combine(gate, filter_gate(structure, label)), structure
