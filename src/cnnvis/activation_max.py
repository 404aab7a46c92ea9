"""Activation maximization: gradient ascent on the input image (Erhan 2009, Simonyan 2013, Yosinski 2015).

One verb, ``maximize(model, objective, ...)``, optimizes a batch of images at once, one batch element per
unit: a channel's mean activation, one spatial unit of a channel, or a class's pre-softmax score (the
objectives of ``cnnvis.objectives``, which feature visualization shares).

The image lives in pixel space [0, 1] (every model here normalizes its own input). Regularizers act on
``x - mean`` (Yosinski's "zero" is the mean image; we use the dataset's mean colour), and after every step
the image is clamped back to [0, 1] (a projection onto the valid input range).

    result = maximize(model, objectives.class_logit([1, 130]), size=128, reg=PRESETS["yosinski3"])

The experiments' procedure over one model sits below: each layer's channels and the classes optimized, each
value set beside the strongest over real images (``dataset_maxima``, cached), in pixel space
(``maximize_units_and_classes``) or with Olah et al.'s parametrizations (``render_units_and_classes``), and
the notes under their tables (``table_notes``, ``lucid_table_notes``).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from torch import nn
from torchvision.transforms.functional import gaussian_blur as _tv_gaussian_blur
from tqdm.auto import tqdm

from cnnvis import featurevis as fv
from cnnvis.hooks import forward_recorded, record_activations
from cnnvis.models import get_layer
from cnnvis.objectives import Objective, channel, class_logit, diversity, objective_values, unit


# ---------------------------------------------------------------- regularizers


@dataclass(frozen=True)
class Regularization:
    """Simonyan's L2 penalty and Yosinski's four regularizers plus jitter; 0 switches each off."""

    l2: float = 0.0  # Simonyan: maximize S(x) - l2 * ||x - mean||^2
    decay: float = 0.0  # Yosinski theta_decay: x - mean <- (1 - decay) (x - mean) after each step
    blur_every: int = 0  # Yosinski theta_b_every: Gaussian blur every k steps
    blur_sigma: float = 0.0  # Yosinski theta_b_width, in pixels
    norm_pct: float = 0.0  # Yosinski theta_n_pct: pixels whose |x - mean| is below this percentile -> mean
    contrib_pct: float = 0.0  # Yosinski theta_c_pct: pixels whose |sum_c (x - mean) grad| is below it -> mean
    jitter: int = 0  # random shift of up to this many pixels before each forward pass

    def __post_init__(self):
        for name in ("norm_pct", "contrib_pct"):
            if not 0 <= getattr(self, name) <= 100:
                raise ValueError(f"{name}={getattr(self, name)} must be a percentile in [0, 100]")
        if not 0 <= self.decay < 1:
            raise ValueError(f"decay={self.decay} must be in [0, 1) (a fraction of x - mean removed per step)")
        if self.blur_every and self.blur_sigma <= 0:
            raise ValueError("blur_every > 0 needs blur_sigma > 0 (the Gaussian's width in pixels)")


# Yosinski et al. 2015 Table 1, the four hand-picked combinations (decay, blur every, blur width, norm pct,
# contribution pct), and Simonyan's L2 penalty; 'none' is plain gradient ascent.
PRESETS = {
    "none": Regularization(),
    "simonyan": Regularization(l2=0.01),
    "yosinski1": Regularization(decay=0.0, blur_every=4, blur_sigma=0.5, norm_pct=50, contrib_pct=0),
    "yosinski2": Regularization(decay=0.3, blur_every=0, blur_sigma=0.0, norm_pct=20, contrib_pct=0),
    "yosinski3": Regularization(decay=0.0001, blur_every=4, blur_sigma=1.0, norm_pct=0, contrib_pct=0),
    "yosinski4": Regularization(decay=0.0, blur_every=0, blur_sigma=0.0, norm_pct=0, contrib_pct=90),
}

# The normalized step (``maximize``'s lr) each preset runs at unless the config sets one. Setting 4's contribution
# clip keeps only the 10 % of pixels with the largest |(x - mean) . grad|: a step larger than the image built so
# far puts that support wherever the new gradient is large and erases the old one, so nothing accumulates
# (EfficientNet-Lite0, 112 px, 80 steps: class logits -0.5..0.6 at 0.15, 18-26 with 2 of 3 top-1 hits at 0.005).
DEFAULT_LR = 0.15
PRESET_LR = {"yosinski4": 0.005}


def preset_lr(preset: str, lr: Optional[float] = None) -> float:
    """``lr`` when given, else the step ``preset`` runs at (``PRESET_LR``, else ``DEFAULT_LR``)."""
    return lr if lr is not None else PRESET_LR.get(preset, DEFAULT_LR)


def contrast_stretch(images: torch.Tensor, mean, fill: float = 0.5, quantile: float = 0.999):
    """Images whose deviations from ``mean`` are faint, stretched about ``mean`` for display (as Yosinski's
    toolbox saves them): the ``quantile`` of |x - mean| of each image becomes ``fill``; an image already that
    strong is left alone (gain 1). Returns the displayed images in [0, 1] and each image's gain."""
    m = torch.as_tensor(mean, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
    spread = (images - m).abs().flatten(1).quantile(quantile, dim=1)
    gains = (fill / spread.clamp_min(1e-6)).clamp_min(1.0)
    stretched = (m + (images - m) * gains.view(-1, 1, 1, 1)).clamp(0, 1)
    return torch.where((gains > 1).view(-1, 1, 1, 1), stretched, images), gains


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Blur (B, C, H, W) with a Gaussian of ``sigma`` pixels (kernel +-3 sigma, reflected borders)."""
    radius = max(1, math.ceil(3 * sigma))
    radius = min(radius, (min(x.shape[-2:]) - 1) // 2)
    return _tv_gaussian_blur(x, [2 * radius + 1] * 2, [sigma, sigma])


def _zero_below_percentile(centered: torch.Tensor, score: torch.Tensor, pct: float) -> torch.Tensor:
    """Set pixels (all channels) whose per-image ``score`` (B, H, W) is below its ``pct`` percentile to 0."""
    threshold = torch.quantile(score.flatten(1), pct / 100, dim=1).view(-1, 1, 1)
    return centered * (score >= threshold).unsqueeze(1)


def random_shift(x: torch.Tensor, jitter: int, generator: torch.Generator) -> torch.Tensor:
    """Roll the batch by one random (dy, dx) in [-jitter, jitter]^2 (wrapping round the borders)."""
    if jitter <= 0:
        return x
    dy, dx = torch.randint(-jitter, jitter + 1, (2,), generator=generator).tolist()
    return torch.roll(x, (dy, dx), dims=(-2, -1))


# ---------------------------------------------------------------- the optimization


@dataclass
class Maximized:
    images: torch.Tensor  # (B, 3, H, W) in [0, 1]
    values: torch.Tensor  # (B,) objective of the final images (no jitter, no penalty)
    history: torch.Tensor  # (steps, B) objective during the optimization (jittered input)


def maximize(model: nn.Module, objective: Objective, size: int = 128, steps: int = 150, lr: float = 0.05,
             reg: Regularization = Regularization(), mean=(0.5, 0.5, 0.5), init_std: float = 0.02,
             seed: int = 0, progress: bool = False, init: Optional[torch.Tensor] = None) -> Maximized:
    """Gradient ascent on a batch of images, one per unit of ``objective``, kept in [0, 1].

    Each step moves each image by ``lr`` times its gradient divided by the image's mean absolute gradient
    (so one ``lr`` suits every layer and unit; every image of the batch is independent), and the step size
    decays linearly to a tenth of ``lr``. Then Yosinski's regularizers run in his order: decay (scaled by the same
    schedule as the step), blur (every ``blur_every`` steps), clipping of small-norm pixels, clipping of
    small-contribution pixels; finally the clamp to [0, 1]. The start is ``mean`` plus Gaussian noise of ``init_std`` (or ``init``).
    """
    device = next(model.parameters()).device
    if model.training:
        raise ValueError("call model.eval() first: batch statistics would couple the units of the batch")
    for name in objective.layers:
        if name is not None:
            get_layer(model, name)  # an unknown name fails listing the valid ones
    shifts = torch.Generator().manual_seed(seed)  # its own stream: the same shifts with or without ``init``
    n = len(objective)
    m = torch.as_tensor(mean, dtype=torch.float32, device=device).view(1, 3, 1, 1)
    if init is None:
        noise = torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed)).to(device)
        init = m + init_std * noise
    x = init.detach().clone().to(device).clamp_(0, 1)
    history = []
    for step in tqdm(range(steps), desc=f"maximize {objective.name}",
                     disable=not progress, leave=False):
        x.requires_grad_(True)
        values = objective_values(model, random_shift(x, reg.jitter, shifts), objective)
        (grad_obj,) = torch.autograd.grad(values.sum(), x)
        x = x.detach()
        history.append(values.detach())
        grad = grad_obj - 2 * reg.l2 * (x - m) if reg.l2 else grad_obj
        scale = grad.abs().flatten(1).mean(1).clamp_min(1e-12).view(-1, 1, 1, 1)
        schedule = 1 - 0.9 * step / max(steps - 1, 1)
        centered = x + lr * schedule * grad / scale - m
        if reg.decay:  # shrinks with the step: Yosinski's lr was constant, so decay / step stays as in his runs
            centered = centered * (1 - reg.decay * schedule)
        if reg.blur_every and (step + 1) % reg.blur_every == 0:
            centered = gaussian_blur(centered, reg.blur_sigma)
        if reg.norm_pct:
            centered = _zero_below_percentile(centered, centered.norm(dim=1), reg.norm_pct)
        if reg.contrib_pct:  # linearized change of the unit if the pixel went back to the mean
            contribution = (centered * grad_obj).sum(1).abs()
            centered = _zero_below_percentile(centered, contribution, reg.contrib_pct)
        x = (m + centered).clamp(0, 1)
    with torch.no_grad():
        final = objective_values(model, x, objective)
    hist = torch.stack(history).cpu() if history else torch.empty(0, n)
    return Maximized(x.detach(), final.detach().cpu(), hist)


def with_overrides(reg: Regularization, **changes) -> Regularization:
    """``reg`` with the non-None ``changes`` applied (config fields left at None keep the preset's)."""
    return replace(reg, **{k: v for k, v in changes.items() if v is not None})


# ---------------------------------------------------------------- the strongest real activations


@torch.no_grad()
def dataset_maxima(model: nn.Module, batches, layers, logits: bool = False, progress: bool = False) -> dict:
    """Per-unit maxima over real images, in one pass that stops at the deepest layer needed.

    Returns ``{layer: {"channel": (C,), "unit": (C,)}}`` with, per channel, the largest mean activation
    of any image and the largest activation at any position of any image; and ``"logits": (K,)`` (the
    largest score of each class) when ``logits``.
    """
    layers = list(layers)
    best: dict = {}
    with record_activations(model, layers, stop_early=not logits) as store:
        for x in tqdm(batches, desc="real-image maxima", disable=not progress, leave=False):
            out = forward_recorded(model, x, store)
            found = {name: store[name] for name in layers}
            for name, act in found.items():
                flat = act.flatten(2) if act.ndim > 2 else act.unsqueeze(-1)
                cur = {"channel": flat.mean(2).amax(0), "unit": flat.amax(2).amax(0)}
                prev = best.get(name)
                best[name] = cur if prev is None else {k: torch.maximum(prev[k], v) for k, v in cur.items()}
            if logits:
                best["logits"] = out.amax(0) if "logits" not in best else torch.maximum(best["logits"], out.amax(0))
    return {k: ({kk: vv.cpu() for kk, vv in v.items()} if isinstance(v, dict) else v.cpu()) for k, v in best.items()}


def cached_maxima(cache_dir, tag: str, pretrained: bool, model: nn.Module, images, size: int, layers, batch_size: int,
                  checkpoint=None) -> dict:
    """``dataset_maxima`` of ``layers`` and the logits over ``images``: one pass over the data, cached under
    ``cache_dir`` by the model, its weights and the images."""
    stamp = Path(checkpoint).stat().st_mtime if checkpoint else None
    key = json.dumps([tag, pretrained, checkpoint, stamp, size, sorted(layers), images.name,
                      len(images), images.paths[0], images.paths[-1]])
    path = Path(cache_dir) / "activation_max" / f"maxima-{hashlib.sha1(key.encode()).hexdigest()[:16]}.pt"
    if path.exists():
        return torch.load(path, weights_only=True)
    batches = (images.tensors(range(i, min(i + batch_size, len(images))), size)
               for i in range(0, len(images), batch_size))
    maxima = dataset_maxima(model, batches, layers, logits=True, progress=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(maxima, path)
    return maxima


# ---------------------------------------------------------------- one model's units and classes


def spread_channels(n_channels: int, k: int) -> list[int]:
    return torch.linspace(0, n_channels - 1, min(k, n_channels)).round().long().unique().tolist()


def maximize_units_and_classes(model, tag, maxima, layers, channels, per_layer, target, classes, class_names,
                               mean=(0.5, 0.5, 0.5), **maximize_options):
    """Channel (``target`` 'channel': its mean; 'unit': its centre) images of each layer's ``channels`` (None:
    ``per_layer`` spread over the layer) and class images, by ``maximize(mean=mean, **maximize_options)``: table rows
    with the real-image maxima beside them, each layer's images and captions, the class images and captions. The
    panels show faint images contrast-stretched about ``mean`` (``contrast_stretch``; the gain in the caption and the
    table's ``display_gain``); the table's values are those of the optimized images themselves."""
    maximize_options["mean"] = mean
    rows, unit_panels = [], {}
    for layer in layers:
        n_channels = maxima[layer]["channel"].numel()
        chosen = list(channels) if channels else spread_channels(n_channels, per_layer)
        objective = (channel if target == "channel" else unit)(layer, chosen)
        result = maximize(model, objective, **maximize_options)
        real = maxima[layer][target][chosen]
        captions = []
        slopes = fv.spectrum_slope(result.images).tolist()
        shown, gains = contrast_stretch(result.images, mean)
        for ch, reached, best, slope, gain in zip(chosen, result.values.tolist(), real.tolist(), slopes, gains):
            rows.append(dict(model=tag, kind=target, layer=layer, index=ch, name=f"{layer}[{ch}]", reached=reached,
                             real_max=best, ratio=reached / best if best > 0 else float("nan"), spectrum_slope=slope,
                             display_gain=float(gain)))
            captions.append(f"{layer}[{ch}]{_gain_text(gain)}\n{reached:.3g} ({rows[-1]['ratio']:.2g}x real max)")
        unit_panels[layer] = (shown, captions)
    result = maximize(model, class_logit(classes), **maximize_options)
    with torch.no_grad():
        logits = model(result.images)
    top1, prob = logits.argmax(1).tolist(), logits.softmax(1)
    class_captions = []
    slopes = fv.spectrum_slope(result.images).tolist()
    shown, gains = contrast_stretch(result.images, mean)
    for b, (k, reached) in enumerate(zip(classes, result.values.tolist())):
        best = float(maxima["logits"][k])
        hit = top1[b] == k
        rows.append(dict(model=tag, kind="class", layer="logits", index=k, name=class_names[k], reached=reached,
                         real_max=best, ratio=reached / best if best > 0 else float("nan"),
                         top1=class_names[top1[b]], top1_is_target=hit, p_target=float(prob[b, k]),
                         spectrum_slope=slopes[b], display_gain=float(gains[b])))
        class_captions.append(f"{class_names[k][:18]}{_gain_text(gains[b])}\nscore {reached:.3g} (real max {best:.3g})"
                              f"\ntop-1: {'= target' if hit else class_names[top1[b]][:16]}")
    return rows, unit_panels, (shown, class_captions)


def _gain_text(gain) -> str:
    return f" (contrast x{float(gain):.0f})" if gain > 1.05 else ""


def render_units_and_classes(model, tag, maxima, layers, channels, per_layer, classes, class_names, preset, size,
                             steps, lr, seed, diversity_images, diversity_weight):
    """The pixel-space baseline and ``preset`` (Olah et al. 2017, ``featurevis.PRESETS``) for each layer's
    channels and the classes, and a diversity row for two channels of the last layer: table rows, the figures'
    panels, the diversity panels."""
    names = list(dict.fromkeys(["lucid_pixel", preset]))
    rows, panels = [], {}

    def run(objective, n, settings):
        return fv.render(model, objective, settings.param(n, size, seed), settings.transforms, steps=steps,
                         lr=lr, seed=seed, progress=True)

    for layer in layers:
        chosen = list(channels) if channels else spread_channels(maxima[layer]["channel"].numel(), per_layer)
        for name in names:
            result = run(channel(layer, chosen), len(chosen), fv.PRESETS[name])
            slopes = fv.spectrum_slope(result.images).tolist()
            captions = []
            for ch, reached, best, slope in zip(chosen, result.values.tolist(),
                                                maxima[layer]["channel"][chosen].tolist(), slopes):
                rows.append(dict(model=tag, parametrization=name, kind="channel", layer=layer, index=ch,
                                 name=f"{layer}[{ch}]", reached=reached, real_max=best,
                                 ratio=reached / best if best > 0 else float("nan"), spectrum_slope=slope))
                captions.append(f"{layer}[{ch}]\n{reached:.3g} ({rows[-1]['ratio']:.2g}x real max)")
            panels[f"{layer}\n{name}"] = (result.images, captions)
    for name in names:
        result = run(class_logit(classes), len(classes), fv.PRESETS[name])
        with torch.no_grad():
            logits = model(result.images)
        top1, prob = logits.argmax(1).tolist(), logits.softmax(1)
        captions = []
        for b, (k, reached, slope) in enumerate(zip(classes, result.values.tolist(),
                                                    fv.spectrum_slope(result.images).tolist())):
            best = float(maxima["logits"][k])
            rows.append(dict(model=tag, parametrization=name, kind="class", layer="logits", index=k,
                             name=class_names[k], reached=reached, real_max=best,
                             ratio=reached / best if best > 0 else float("nan"), spectrum_slope=slope,
                             top1=class_names[top1[b]], top1_is_target=top1[b] == k, p_target=float(prob[b, k])))
            captions.append(f"{class_names[k][:18]}\nscore {reached:.3g}\n"
                            f"top-1: {'= target' if top1[b] == k else class_names[top1[b]][:16]}")
        panels[f"classes\n{name}"] = (result.images, captions)
    layer, k = layers[-1], diversity_images
    pair = (list(channels) if channels else spread_channels(maxima[layer]["channel"].numel(), 2))[:2]
    units, groups = [c for c in pair for _ in range(k)], [g for g in range(len(pair)) for _ in range(k)]
    objective = channel(layer, units) + diversity_weight * diversity(layer, groups)
    result = run(objective, len(units), fv.PRESETS[preset])
    with torch.no_grad():
        reached = objective_values(model, result.images, channel(layer, units)).tolist()
        spread = objective_values(model, result.images, diversity(layer, groups)).tolist()
    diversity_panels = {f"{layer}[{c}]": (result.images[g * k:(g + 1) * k],
                                          [f"{v:.3g}; 1 - cos(Gram) {d:.2f}" for v, d in
                                           zip(reached[g * k:(g + 1) * k], spread[g * k:(g + 1) * k])])
                        for g, c in enumerate(pair)}
    return rows, panels, diversity_panels


def summary_metrics(prefix: str, rows: list[dict], target: str) -> dict:
    """One run's headline numbers, named alike for every preset so that a sweep's summary has one column each."""
    classes = [r for r in rows if r["kind"] == "class"]
    units = [r for r in rows if r["kind"] != "class"]
    return {f"{prefix}_class_top1_rate": float(np.mean([r["top1_is_target"] for r in classes])),
            f"{prefix}_class_mean_score": float(np.mean([r["reached"] for r in classes])),
            f"{prefix}_class_median_ratio": float(np.nanmedian([r["ratio"] for r in classes])),
            f"{prefix}_{target}_median_ratio": float(np.nanmedian([r["ratio"] for r in units])),
            f"{prefix}_median_spectrum_slope": float(np.median([r["spectrum_slope"] for r in rows]))}


def lucid_table_notes(n_images: int, dataset: str, preset: str, lr: float, steps: int, sizes: list[int]) -> str:
    """The notes under the lucid presets' table (``preset``: a ``featurevis.PRESETS`` name, beside its pixel-space
    baseline), each model's images of side ``sizes``; the real images are ``n_images`` of ``dataset``."""
    return f"""
One row per unit and parametrization. `reached`: the channel's mean activation (class: the pre-softmax score)
on its optimized image; `real_max`: the largest over the {n_images} images of {dataset}
at the same size; `ratio` = reached / real_max (empty where no real image drives the unit above 0).
`spectrum_slope`: slope of log power against log frequency of the radially averaged power spectrum of the
grey image (natural images are near -2, white noise 0). `top1_is_target`: the model's top-1 on the class image.

Method (cnnvis.featurevis, after Olah et al. 2017 and Lucid): Adam (lr {lr}) for {steps} steps on
{fv.PRESETS[preset]} (`{preset}`) and on the pixel-space baseline {fv.PRESETS['lucid_pixel']}
(`lucid_pixel`); robust = Lucid's transforms (pad 12, jitter 8, scale 0.9-1.1, rotate +-10 degrees, jitter 4)
before each step. {sizes[0] if len(sizes) == 1 else 'several'} px, one batch element per unit.
Olah et al. publish figures, no numbers: there is no paper number to set beside ours.
"""


def table_notes(target: str, n_images: int, dataset: str, hits: dict, preset: str, reg: Regularization, lr: float,
                size: int, steps: int) -> str:
    """The notes under the pixel-space presets' table: ``target`` channel | unit, the real images ``n_images`` of
    ``dataset``, ``hits`` the class images' top-1 rate per model (as text), ``preset`` and its ``reg``."""
    value = "mean of the channel map" if target == "channel" else "centre unit of the map"
    return f"""
`reached`: the unit's value on its optimized image ({target}: {value};
class: pre-softmax score). `real_max`: the largest value of the same unit over the {n_images} images of
{dataset} ({'mean of the map' if target == 'channel' else 'any position of the map'}, at the same input size).
`ratio` = reached / real_max (left empty where no real image drives the unit above 0: EfficientNet's stage
outputs are linear bottlenecks, so they are signed). `top1_is_target`: is the model's top-1 on the class image
its class; rate over the classes: {', '.join(f'{k} {v}' for k, v in hits.items())}. `p_target`: its softmax probability.
`spectrum_slope`: slope of log power against log frequency of the image's radially averaged power spectrum
(natural images are near -2, white noise 0), as for the lucid presets.

Method: gradient ascent in pixel space, each image starting at the dataset's mean colour plus noise (std 0.02),
each step lr * gradient / mean|gradient| of that image (lr {lr} decaying linearly to a tenth), then Yosinski's
regularizers around the mean colour (the decay shrinking with the step, so decay / step stays as in his constant-lr
runs: with a fixed decay the image faded tenfold as the step shrank), then a clamp to [0, 1] (the models' valid
input). The multiplicative decay and the percentile clips do not depend on the input's range or scale. Regularization: preset
`{preset}` = {reg}. {size} px, {steps} steps, one batch element per unit. `display_gain`: the figures show an
image whose deviations from the mean colour are faint stretched about it by this factor (its 99.9th percentile
|x - mean| shown as 0.5, as Yosinski's toolbox saves its images; 1: shown as optimized).

Papers: Erhan 2009, Simonyan 2013 and Yosinski 2015 publish no numbers for this (their results are figures:
Simonyan Fig. 1, Yosinski Figs. 3-4); there is no paper number to set beside ours. Differences: EfficientNet-Lite0
instead of their AlexNet-style nets, {size} px instead of 227 px (so a blur width in pixels is {227 / size:.1f}x as strong
relative to the image), {steps} normalized steps instead of their 200-1000+ plain SGD steps, all on a CPU.
"""
