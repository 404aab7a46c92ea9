"""Backward rules at rectifiers: the deconvnet rule (Zeiler & Fergus 2013) and guided backpropagation
(Springenberg et al. 2015), applied to *every* rectifier a model calls.

The rule is installed as a ``TorchFunctionMode``, so it catches ``nn.ReLU``, ``nn.ReLU6`` (a ``hardtanh``
from 0 to 6), ``F.relu``, ``F.relu6``, ``torch.relu`` and ``Tensor.relu`` alike: module hooks would miss the
functional calls, and replacing only ``nn.ReLU`` silently leaves ReLU6 networks with the plain gradient.

    with rectifier_rule("guided"):
        model(x)[0, target].backward()   # x.grad is guided backpropagation
"""

from __future__ import annotations

import math

import torch
from torch.nn import functional as F
from torch.overrides import TorchFunctionMode

RULES = ("gradient", "deconvnet", "guided")
_RELU = {F.relu, torch.relu, torch.Tensor.relu, F.relu_, torch.relu_, torch.Tensor.relu_}


class _Rectify(torch.autograd.Function):
    """clamp(x, lower, upper) forward; the chosen rule backward."""

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
        if ctx.rule == "guided":  # both: where the unit was active and the signal is positive
            return grad.clamp(min=0) * passes, None, None, None
        return grad * passes, None, None, None


class _RuleMode(TorchFunctionMode):
    def __init__(self, rule: str):
        super().__init__()
        self.rule = rule
        self.calls = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        bounds = _rectifier_bounds(func, args, kwargs)
        if bounds is None:
            return func(*args, **kwargs)
        self.calls += 1
        return _Rectify.apply(args[0], *bounds, self.rule)


def _rectifier_bounds(func, args, kwargs):
    """(lower, upper) when ``func`` is a rectifier call, else None."""
    if func in _RELU:
        return 0.0, math.inf
    if func is F.relu6:
        return 0.0, 6.0
    if func is F.hardtanh:
        lower = args[1] if len(args) > 1 else kwargs.get("min_val", -1.0)
        upper = args[2] if len(args) > 2 else kwargs.get("max_val", 1.0)
        return (float(lower), float(upper)) if lower == 0 else None
    return None


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
