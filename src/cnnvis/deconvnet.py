"""The deconvnet of Zeiler & Fergus (2013): project one activation back to pixel space.

For networks built of conv / ReLU / max-pool / local response normalization (AlexNet, ZFNet, VGG's
features, any plain ``nn.Sequential`` of those) the projection is the paper's: the forward pass records
the max-pool switches; then, from the chosen activation alone (every other activation of its layer set to
zero), each layer is inverted in turn by unpooling with the switches, rectifying, and filtering with the
transposed filters. Biases are not used and contrast normalization is passed through, as in the paper,
whose deconvnet has only those three operations.

Any other network (residual blocks, depthwise convs, ReLU6, functional activations) gets the same
projection through autograd with the deconvnet rule at every rectifier (``cnnvis.rectifiers``: only the
positive part of the backward signal passes, whatever the forward pass did). On a network of conv / ReLU /
max-pool the two ways give the same result: the gradient of max-pooling *is* unpooling with the switches,
and the gradient of a convolution *is* filtering with the transposed filters.

    proj = deconv_project(model, images, "conv5", channel=17)   # (N, 3, H, W), each image's strongest unit

Without max-pooling between the input and the layer (EfficientNet-Lite0: strided convs, ReLU6, BatchNorm in
eval, residual sums) nothing in the backward pass depends on the image: the deconvnet rule rectifies the
signal whatever the forward pass did, and every other step is linear. The projection is then one fixed linear
map of the seed (Mahendran & Vedaldi 2016): it changes with the seed's location and scales with its value,
never with the image. ``deconv_project`` warns in that case; ``has_switches`` tells callers beforehand, so
they can show guided backpropagation (Springenberg et al. 2015), which keeps the forward pass's mask, instead.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn
from torch.nn import functional as F
from torch.overrides import TorchFunctionMode

from cnnvis.hooks import forward_recorded, record_activations
from cnnvis.models import ImageClassifier, Normalize, get_layer
from cnnvis.rectifiers import rectifier_rule

METHODS = ("auto", "switches", "autograd")
# Modules the switch-based deconvnet inverts (or, for LRN / dropout / identity, passes through).
SWITCH_MODULES = (nn.Conv2d, nn.ReLU, nn.MaxPool2d, nn.LocalResponseNorm, nn.Dropout, nn.Identity, Normalize)


def switch_chain(model: nn.Module, layer: str) -> list[nn.Module] | None:
    """The modules from the input to ``layer`` when the network is a chain the switch-based deconvnet
    can invert (every module one of ``SWITCH_MODULES``), else None."""
    target = getattr(model, "layers", {}).get(layer, layer)
    if isinstance(model, ImageClassifier):
        items = [("normalize", model.normalize)] + [(f"features.{n}", m) for n, m in model.features.named_children()]
    elif isinstance(model, nn.Sequential):
        items = list(model.named_children())
    else:
        return None
    chain = []
    for path, module in items:
        if not isinstance(module, SWITCH_MODULES) or (isinstance(module, nn.Conv2d) and (
                isinstance(module.padding, str) or module.padding_mode != "zeros")):
            return None
        chain.append(module)
        if path == target:
            return chain
    return None


class _MaxPoolCalls(TorchFunctionMode):
    """Counts max-pool calls (modules and functional alike) during a forward pass."""

    def __init__(self):
        super().__init__()
        self.calls = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.calls += "max_pool" in getattr(func, "__name__", "")
        return func(*args, **(kwargs or {}))


@torch.no_grad()
def has_switches(model: nn.Module, layer: str, input_shape: tuple[int, int, int] | None = None) -> bool:
    """Whether a max-pool runs between the input and ``layer``: only then does a deconvnet projection depend
    on the image (through the pooling switches); without one it is a fixed linear map of the seed.
    ``input_shape``: (C, H, W) of one input (default: the first conv's channels at the model's input size)."""
    get_layer(model, layer)  # unknown names fail listing the valid ones
    first = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    size = getattr(model, "input_size", 224)
    shape = input_shape or (first.in_channels, size, size)
    x = torch.zeros(1, *shape, dtype=first.weight.dtype, device=first.weight.device)
    with _MaxPoolCalls() as mode, record_activations(model, layer, stop_early=True) as store:
        forward_recorded(model, x, store)
    return mode.calls > 0


def deconv_project(model: nn.Module, images: torch.Tensor, layer: str, channel: int, location=None,
                   method: str = "auto") -> torch.Tensor:
    """Project one activation of ``channel`` at ``layer`` back to pixel space, per image.

    ``location``: None (each image's strongest unit of the channel), one (y, x) for all images, or a
    list / (N, 2) tensor of one (y, x) per image. The projection starts from the activation's own value,
    all other activations of the layer zeroed. ``method``: ``switches`` (the paper's deconvnet; conv /
    ReLU / max-pool / LRN chains only), ``autograd`` (deconvnet rule at every rectifier; any network) or
    ``auto`` (switches when the network allows). Returns (N, C_in, H, W) in the model's input space.
    """
    if method not in METHODS:
        raise ValueError(f"unknown deconvnet method {method!r}; choose one of {', '.join(METHODS)}")
    get_layer(model, layer)  # unknown names fail listing the valid ones
    chain = switch_chain(model, layer) if method != "autograd" else None
    if method == "switches" and chain is None:
        raise ValueError(
            f"the switch-based deconvnet needs a chain of {', '.join(m.__name__ for m in SWITCH_MODULES)} from the "
            f"input to {layer!r}, which {type(model).__name__} is not; use method='autograd' (or 'auto')")
    if not has_switches(model, layer, tuple(images.shape[1:])):
        warnings.warn(
            f"deconvnet at {layer!r} of {type(model).__name__}: no max-pool switches between the input and this "
            "layer, so the projection is a fixed linear map of the seed that does not depend on the image, only on "
            "the seed's location (Mahendran & Vedaldi 2016); guided backpropagation (cnnvis.cams.GuidedBackprop, "
            "Springenberg et al. 2015) is the image-dependent alternative", stacklevel=2)
    if chain is not None:
        return _project_with_switches(chain, images, channel, location)
    return _project_with_autograd(model, images, layer, channel, location)


def _seed(act: torch.Tensor, channel: int, location) -> torch.Tensor:
    """The layer's activations with all but one per image zeroed: (channel, y, x) keeps its value."""
    if act.ndim == 2:  # a fully connected layer: one unit per channel
        act = act[:, :, None, None]
    n, c, h, w = act.shape
    if not 0 <= channel < c:
        raise IndexError(f"channel {channel} out of range: the layer has {c} channels")
    if location is None:
        flat = act[:, channel].flatten(1).argmax(1)
        ys, xs = flat // w, flat % w
    else:
        loc = torch.as_tensor(location, dtype=torch.long).reshape(-1, 2)
        if len(loc) == 1:
            loc = loc.expand(n, 2)
        if len(loc) != n:
            raise ValueError(f"{len(loc)} locations given for {n} images: give one (y, x), or one per image")
        ys, xs = loc[:, 0], loc[:, 1]
        if (ys < 0).any() or (ys >= h).any() or (xs < 0).any() or (xs >= w).any():
            raise IndexError(f"location out of range: the layer's maps are {h}x{w}")
    seed = torch.zeros_like(act)
    rows = torch.arange(n)
    seed[rows, channel, ys, xs] = act[rows, channel, ys, xs]
    return seed


@torch.no_grad()
def _project_with_switches(chain: list[nn.Module], images: torch.Tensor, channel: int, location) -> torch.Tensor:
    h, records = images, []
    for module in chain:  # forward, keeping each module's input shape and the max-pool switches
        if isinstance(module, nn.MaxPool2d):
            out, switches = F.max_pool2d(h, module.kernel_size, module.stride, module.padding, module.dilation,
                                         module.ceil_mode, return_indices=True)
        else:
            out, switches = module(h), None
        records.append((module, h.shape, switches))
        h = out
    signal = _seed(h, channel, location).reshape(h.shape)
    for module, shape, switches in reversed(records):
        if isinstance(module, nn.ReLU):
            signal = signal.clamp(min=0)
        elif isinstance(module, nn.MaxPool2d):  # unpool: each value back to where its max came from
            flat = torch.zeros(shape[0], shape[1], shape[2] * shape[3], dtype=signal.dtype, device=signal.device)
            signal = flat.scatter_add_(2, switches.flatten(2), signal.flatten(2)).view(shape)
        elif isinstance(module, nn.Conv2d):  # filter with the transposed (flipped) filters, no bias
            signal = torch.nn.grad.conv2d_input(shape, module.weight, signal, module.stride, module.padding,
                                                module.dilation, module.groups)
        elif isinstance(module, Normalize):  # (x - mean) / std is linear: its transpose divides by std
            signal = signal / module.std
    return signal


def guided_project(model: nn.Module, images: torch.Tensor, layer: str, channel: int, location=None) -> torch.Tensor:
    """Guided backpropagation (Springenberg et al. 2015) of one activation, seeded as ``deconv_project``: the
    deconvnet rule plus the forward pass's ReLU mask, so it depends on the image even without max-pool switches."""
    get_layer(model, layer)
    return _project_with_autograd(model, images, layer, channel, location, rule="guided")


def _project_with_autograd(model: nn.Module, images: torch.Tensor, layer: str, channel: int, location,
                           rule: str = "deconvnet") -> torch.Tensor:
    x = images.detach().clone().requires_grad_(True)
    with torch.enable_grad(), rectifier_rule(rule), \
            record_activations(model, layer, stop_early=True, detach=False) as store:
        forward_recorded(model, x, store)
        act = store[layer]
        seed = _seed(act.detach(), channel, location).reshape(act.shape)
        (grad,) = torch.autograd.grad(act, x, seed)
    return grad
