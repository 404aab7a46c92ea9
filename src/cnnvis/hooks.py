"""Reading activations of named layers with forward hooks that are always released."""

from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import nn

from cnnvis.models import get_layer


class _Recorded(Exception):
    """Raised by the last needed hook, so the rest of the network is not computed."""


@contextmanager
def record_activations(model: nn.Module, layers, stop_early: bool = False, detach: bool = True):
    """Within the block, each forward pass fills the yielded dict {layer name: output}.

    With ``stop_early`` the pass ends as soon as every requested layer has produced its output
    (call the model through ``forward_recorded``).
    """
    names = [layers] if isinstance(layers, str) else list(layers)
    store: dict[str, torch.Tensor] = {}
    handles = []

    def hook_for(name):
        def hook(module, inputs, output):
            store[name] = output.detach() if detach else output
            if stop_early and len(store) == len(names):
                raise _Recorded

        return hook

    try:
        for name in names:
            handles.append(get_layer(model, name).register_forward_hook(hook_for(name)))
        yield store
    finally:
        for h in handles:
            h.remove()


def forward_recorded(model: nn.Module, x: torch.Tensor, store: dict) -> torch.Tensor | None:
    """Run ``model(x)`` inside ``record_activations``; returns the logits, or None when it stopped early."""
    store.clear()
    try:
        return model(x)
    except _Recorded:
        return None


@torch.no_grad()
def activations(model: nn.Module, x: torch.Tensor, layers) -> dict[str, torch.Tensor]:
    """The outputs of ``layers`` for a batch, computing only as far into the network as needed."""
    with record_activations(model, layers, stop_early=True) as store:
        forward_recorded(model, x, store)
        return dict(store)
