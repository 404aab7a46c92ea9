"""Weights: torchvision's files in the torch hub cache (a missing file is named), checkpoints, and the check of a
model with random weights whose output does not depend on the image."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch
import torchvision
from torch import nn


def _cached_weights_file(builder_name: str, weights_name: str = "IMAGENET1K_V1") -> Path:
    """Where torch hub keeps the file of torchvision's ``weights_name`` weights for ``builder_name``."""
    weights = torchvision.models.get_model_weights(builder_name)[weights_name]
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(weights.url)


def _torchvision_weights(builder_name: str, weights_name: str = "IMAGENET1K_V1"):
    weights = torchvision.models.get_model_weights(builder_name)[weights_name]
    file = _cached_weights_file(builder_name, weights_name)
    if not file.exists():
        try:
            return weights.get_state_dict(progress=True)
        except Exception as err:  # no network: say exactly which file is missing and where it goes
            raise FileNotFoundError(
                f"{weights_name} weights for {builder_name} are not cached and could not be downloaded ({err}). "
                f"Put {os.path.basename(weights.url)} (from {weights.url}) at {file} "
                f"(set TORCH_HOME to move the cache), or use model.pretrained=false."
            ) from None
    return torch.load(file, map_location="cpu", weights_only=True)


RANDOM_INIT = "random init"
ZERO_HEAD_STD = 0.01  # the spread cam_beyond drew its random ViT head from before the library did (same maps)
DRAWN_HEAD = f"{RANDOM_INIT}, head N(0, {ZERO_HEAD_STD:g}^2)"  # random weights whose zero head was drawn


def output_is_constant(model: nn.Module, input_size: int) -> bool:
    """Whether ``model`` (in eval mode) gives the same output for a black and a white image, every tensor of it
    equal to float resolution (``_same``): then its output does not depend on the image, every gradient of it is 0
    or rounding, and every attribution explains nothing."""
    training = model.training
    model.eval()
    try:
        with torch.no_grad():
            black, white = (model(torch.full((1, 3, input_size, input_size), value)) for value in (0.0, 1.0))
    finally:
        model.train(training)
    return all(_same(a, b) for a, b in zip(_tensors(black), _tensors(white), strict=True))


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal shapes and values, floats within their resolution (eps) of the tensor's largest magnitude."""
    if a.shape != b.shape or not a.is_floating_point():
        return a.shape == b.shape and torch.equal(a, b)
    return a.numel() == 0 or bool((a - b).abs().max() <= torch.finfo(a.dtype).eps * a.abs().max())


def _tensors(output) -> list[torch.Tensor]:
    """Every tensor in a model's output (a tensor, or lists / dicts of them: a detector's)."""
    if isinstance(output, torch.Tensor):
        return [output]
    items = output.values() if isinstance(output, dict) else output
    return [t for item in items for t in _tensors(item)]


def check_random_output(model: nn.Module, name: str, input_size: int) -> nn.Module:
    """``model``, checked when its ``weights_source`` is random init: a model with random weights whose output is
    constant (``output_is_constant``) explains nothing. When a zero-initialized linear head is the cause
    (torchvision's ViT: every logit 0), its weights are drawn from N(0, ZERO_HEAD_STD^2) instead, and
    ``weights_source`` and a warning say so; any other constant output (e.g. a random detector with no box above
    its score threshold) is kept, with a warning."""
    if model.weights_source != RANDOM_INIT or not output_is_constant(model, input_size):
        return model
    head = getattr(model, "head", None)
    if isinstance(head, nn.Linear) and not head.weight.any():
        nn.init.normal_(head.weight, std=ZERO_HEAD_STD)
        model.weights_source = DRAWN_HEAD
        warnings.warn(f"{name} with random weights has a zero-initialized head (torchvision's init): its output "
                      "was the same for every image, so every map would be zero; the head's weights were drawn from "
                      f"N(0, {ZERO_HEAD_STD:g}^2) instead (weights_source says so)", stacklevel=3)
        if not output_is_constant(model, input_size):
            return model
    why = " (a detector: no box above its score threshold)" if getattr(model, "task", None) == "detection" else ""
    warnings.warn(f"{name} with random weights gives the same output for a black and a white image (to float "
                  f"resolution): every gradient of it is 0 or rounding and every map explains nothing{why}",
                  stacklevel=3)
    return model


def load_checkpoint_state(path: str) -> dict:
    """Model weights from a trainer checkpoint ({'model': state, ...}) or a bare state dict; never unpickles code."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    blob = torch.load(path, map_location="cpu", weights_only=True)
    return blob["model"] if isinstance(blob, dict) and "model" in blob else blob


def _num_classes_of(state: dict) -> int:
    weights = [v for k, v in state.items() if k.startswith("classifier.") and k.endswith("weight") and v.ndim == 2]
    return weights[-1].shape[0]
