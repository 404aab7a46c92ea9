"""Backward rules at rectifiers: the deconvnet rule (Zeiler & Fergus 2013) and guided backpropagation
(Springenberg et al. 2015), applied to *every* rectifier a model calls.

The rule is installed as a ``TorchFunctionMode``, so it catches ``nn.ReLU``, ``nn.ReLU6`` (a ``hardtanh``
from 0 to 6), ``F.relu``, ``F.relu6``, ``torch.relu``, ``Tensor.relu``, ``F.hardtanh`` from 0, and a clamp from 0
(``torch.clamp`` / ``clip`` / ``clamp_min`` and their Tensor methods, e.g. ``x.clamp(0, 6)``, a ReLU6 written by
hand) alike: module hooks would miss the functional calls, and replacing only ``nn.ReLU`` silently leaves ReLU6
networks with the plain gradient. In-place spellings (``relu_``, ``hardtanh_``, ``clamp_``, ``inplace=True``) keep
their side effect: the rectified values are written back into the tensor. A clamp or hardtanh whose lower bound is
not 0 (or is a tensor) is not a rectifier and keeps its plain gradient.

    with rectifier_rule("guided"):
        model(x)[0, target].backward()   # x.grad is guided backpropagation
"""

from __future__ import annotations

import math

import torch
from torch.nn import functional as F
from torch.overrides import TorchFunctionMode

RULES = ("gradient", "deconvnet", "guided")
_RELU = {F.relu, torch.relu, torch.Tensor.relu}
_RELU_INPLACE = {F.relu_, torch.relu_, torch.Tensor.relu_}
_CLAMP = {torch.clamp, torch.Tensor.clamp, torch.clip, torch.Tensor.clip}
_CLAMP_INPLACE = {torch.clamp_, torch.Tensor.clamp_, torch.clip_, torch.Tensor.clip_}
_CLAMP_MIN = {torch.clamp_min, torch.Tensor.clamp_min}
_CLAMP_MIN_INPLACE = {torch.clamp_min_, torch.Tensor.clamp_min_}


class _Rectify(torch.autograd.Function):
    """clamp(x, lower, upper) forward; the deconvnet or guided rule backward."""

    @staticmethod
    def forward(ctx, x, lower, upper, rule):
        ctx.rule = rule
        ctx.save_for_backward((x > lower) & (x < upper))
        return x.clamp(lower, upper)

    @staticmethod
    def backward(ctx, grad):
        (passes,) = ctx.saved_tensors
        if ctx.rule == "deconvnet":  # rectify the backward signal, ignore the forward pass
            return grad.clamp(min=0), None, None, None
        # guided: both, where the unit was active and the signal is positive
        return grad.clamp(min=0) * passes, None, None, None


class _RuleMode(TorchFunctionMode):
    def __init__(self, rule: str):
        super().__init__()
        self.rule = rule
        self.calls = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        rectifier = _rectifier(func, args, kwargs)
        if rectifier is None:
            return func(*args, **kwargs)
        self.calls += 1
        if self.rule == "gradient":  # the op itself: its own gradient, bounds included as PyTorch has them
            return func(*args, **kwargs)
        lower, upper, inplace = rectifier
        out = _Rectify.apply(args[0], lower, upper, self.rule)
        # an in-place rectifier's caller may read the tensor it passed, not the return value
        return args[0].copy_(out) if inplace else out


def _argument(args, kwargs, position: int, name: str, default):
    return args[position] if len(args) > position else kwargs.get(name, default)


def _rectifier(func, args, kwargs):
    """(lower, upper, inplace) when ``func`` is a rectifier call (lower bound 0), else None."""
    if func in _RELU or func in _RELU_INPLACE:
        return 0.0, math.inf, func in _RELU_INPLACE or bool(_argument(args, kwargs, 1, "inplace", False))
    if func is F.relu6:
        return 0.0, 6.0, bool(_argument(args, kwargs, 1, "inplace", False))
    if func is F.hardtanh or func is F.hardtanh_:
        lower, upper = _argument(args, kwargs, 1, "min_val", -1.0), _argument(args, kwargs, 2, "max_val", 1.0)
        inplace = func is F.hardtanh_ or bool(_argument(args, kwargs, 3, "inplace", False))
    elif func in _CLAMP or func in _CLAMP_INPLACE:
        lower, upper = _argument(args, kwargs, 1, "min", None), _argument(args, kwargs, 2, "max", None)
        inplace = func in _CLAMP_INPLACE
    elif func in _CLAMP_MIN or func in _CLAMP_MIN_INPLACE:
        lower, upper, inplace = _argument(args, kwargs, 1, "min", None), None, func in _CLAMP_MIN_INPLACE
    else:
        return None
    if not isinstance(lower, (int, float)) or lower != 0 or not isinstance(upper, (int, float, type(None))):
        return None  # clipping elsewhere (e.g. hardtanh's -1 to 1, a box clamped to a tensor) is not a rectifier
    return 0.0, math.inf if upper is None else float(upper), inplace


class rectifier_rule:
    """Context manager: within it, backward passes through rectifiers follow ``rule``
    (``gradient``: unchanged, ``deconvnet``, ``guided``). ``calls`` counts the rectifiers it replaced."""

    def __init__(self, rule: str):
        if rule not in RULES:
            raise ValueError(f"unknown rectifier rule {rule!r}; choose one of {', '.join(RULES)}")
        self.mode = _RuleMode(rule)

    @property
    def calls(self) -> int:
        return self.mode.calls

    def __enter__(self):
        self.mode.__enter__()
        return self

    def __exit__(self, *exc):
        return self.mode.__exit__(*exc)
