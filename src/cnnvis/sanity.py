"""Sanity checks for saliency maps (Adebayo et al. 2018): does a map change when the weights it explains are destroyed?

Cascading model-parameter randomization: the network's named layers are re-initialized from the top (the
logits) down, one more layer each step, cumulatively, and each step's map is compared with the trained
network's map of the same image and the same class. A layer's block is every module with parameters from
after the previous named layer through it (ZFNet's ``conv1`` is ``features.conv1``; EfficientNet-Lite0's
``stage4`` is its whole stage), re-drawn by each module's own ``reset_parameters`` (PyTorch's default init
of conv and linear layers; BatchNorm back to weight 1, bias 0, running mean 0, running variance 1), as
Quantus's ModelParameterRandomisation does.

The similarity measures are the paper's: Spearman rank correlation of the maps with and without absolute
values, SSIM (scikit-image) and the Pearson correlation of their HOG descriptors (scikit-image). An input-space
signal (N, 3, H, W) becomes a 2-D map as the paper did: the sum over colour channels of its absolute values
(the "absolute" map) or of its signed values (the "signed" map); a class activation map is both.
"""

from __future__ import annotations

import copy
from typing import Optional

import numpy as np
import torch
from scipy.stats import rankdata
from skimage.feature import hog
from skimage.metrics import structural_similarity
from torch import nn

from cnnvis.stats import Estimate, bootstrap_mean

MEASURES = ("spearman_abs", "spearman_signed", "ssim", "hog")
MEASURE_NAMES = {"spearman_abs": "Spearman (absolute values)", "spearman_signed": "Spearman (signed)",
                 "ssim": "SSIM", "hog": "HOG similarity"}
SENSITIVE, INSENSITIVE, UNDECIDED = "sensitive", "insensitive", "undecided"


def cascade_blocks(model: nn.Module) -> dict[str, list[str]]:
    """{layer name: paths of the modules with parameters that belong to it}, in forward order (input first).
    A named layer owns every parametrized module after the previous named layer through its own subtree;
    named layers that own none (pooling, a ReLU's output whose conv an earlier name took) are left out."""
    if not getattr(model, "layers", None):
        raise ValueError(f"{type(model).__name__} names no layers (model.layers); pass blocks= explicitly as "
                         "{name: [module paths]}")
    order = [path for path, _ in model.named_modules()]
    blocks, start = {}, 0
    for name, path in model.layers.items():
        stop = max(i for i, p in enumerate(order) if p == path or p.startswith(path + "."))
        owned = [p for p in order[start:stop + 1]
                 if next(model.get_submodule(p).parameters(recurse=False), None) is not None]
        if owned:
            blocks[name] = owned
        start = max(start, stop + 1)
    return blocks


def reinitialize_(model: nn.Module, paths: list[str]) -> None:
    """Re-draw the parameters of the modules at ``paths`` with their own init (BatchNorm's resets its statistics
    too)."""
    for path in paths:
        module = model.get_submodule(path)
        if not hasattr(module, "reset_parameters"):
            raise TypeError(f"{path} ({type(module).__name__}) has parameters but no reset_parameters(): "
                            "it cannot be re-initialized with its own init")
        module.reset_parameters()


def cascading_randomization(model: nn.Module, blocks: Optional[dict[str, list[str]]] = None,
                            seed: int = 0) -> list[tuple[str, nn.Module]]:
    """[(layer name, copy of ``model`` with that layer and every layer above it re-initialized)], top layer
    first; each step re-initializes one more layer than the last (seeded: step k draws under seed + k).
    ``blocks``: {name: module paths} in forward order; default ``cascade_blocks(model)``."""
    blocks = cascade_blocks(model) if blocks is None else blocks
    current = copy.deepcopy(model)
    steps = []
    for k, (name, paths) in enumerate(reversed(list(blocks.items()))):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed + k)
            reinitialize_(current, paths)
        steps.append((name, copy.deepcopy(current)))
    return steps


def two_d_maps(attribution: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """(absolute, signed) (N, H, W) maps: an input-space signal summed over channels of |a| and of a; a class
    activation map (N, H, W) is both."""
    a = attribution.detach().float().cpu()
    if a.ndim == 4:
        return a.abs().sum(1).numpy(), a.sum(1).numpy()
    return a.numpy(), a.numpy()


def unit_scaled(m: np.ndarray) -> np.ndarray:
    """A non-negative map divided by its maximum (all zeros stays all zeros): the [0, 1] input of SSIM and HOG."""
    top = float(m.max())
    return m / top if top > 0 else np.zeros_like(m)


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation; a constant vector shares no ordering with anything (0), except another constant (1)."""
    a, b = a - a.mean(), b - b.mean()
    na, nb = np.sqrt((a * a).sum()), np.sqrt((b * b).sum())
    if na == 0 or nb == 0:
        return 1.0 if na == nb else 0.0
    return float((a * b).sum() / (na * nb))


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation of two maps (ties get their average rank)."""
    return _correlation(rankdata(a.ravel()), rankdata(b.ravel()))


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """SSIM of two non-negative maps, each scaled to [0, 1] by its maximum (scikit-image, data range 1)."""
    return float(structural_similarity(unit_scaled(a), unit_scaled(b), data_range=1.0))


def hog_similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of the HOG descriptors (scikit-image defaults: 9 orientations, 8x8-pixel cells,
    3x3-cell blocks) of two non-negative maps scaled to [0, 1] by their maxima."""
    return _correlation(hog(unit_scaled(a)), hog(unit_scaled(b)))


def similarities(original: torch.Tensor, other: torch.Tensor) -> dict[str, np.ndarray]:
    """Per image, each of ``MEASURES`` between two attributions of the same images (any method's output)."""
    (abs_a, signed_a), (abs_b, signed_b) = two_d_maps(original), two_d_maps(other)
    return {
        "spearman_abs": np.array([spearman(x, y) for x, y in zip(abs_a, abs_b)]),
        "spearman_signed": np.array([spearman(x, y) for x, y in zip(signed_a, signed_b)]),
        "ssim": np.array([ssim(x, y) for x, y in zip(abs_a, abs_b)]),
        "hog": np.array([hog_similarity(x, y) for x, y in zip(abs_a, abs_b)]),
    }


def other_images_similarity(maps: torch.Tensor) -> dict[str, np.ndarray] | None:
    """``similarities`` of each map with the next image's map of the same model: what unrelated maps share
    (centre bias, borders), the baseline level of ``sensitivity_margin``; None for a single map."""
    return similarities(maps, maps.roll(1, 0)) if len(maps) > 1 else None


def sensitivity_margin(similarity, other=None, fraction: float = 0.5) -> Estimate:
    """Per image, the similarity ``s`` to the randomized model's map minus the threshold ``o + fraction * (1 - o)``,
    where ``o`` is the trained map's similarity to another image's trained map (the level that image-independent
    structure such as centre bias gives; 0 without it): the mean with its bootstrap interval over images. With
    ``fraction`` 0.5 the threshold lies halfway between unrelated maps and identical ones."""
    s = np.asarray(similarity, dtype=np.float64)
    o = np.zeros_like(s) if other is None else np.asarray(other, dtype=np.float64)
    return bootstrap_mean(s - (o + fraction * (1 - o)))


def sensitivity(margin: Estimate) -> str:
    """'sensitive' when the 95 % interval of ``sensitivity_margin`` lies below 0, 'insensitive' when it lies
    above, else 'undecided' (also without an interval: n = 1)."""
    if margin.below(0):
        return SENSITIVE
    if margin.above(0):
        return INSENSITIVE
    return UNDECIDED


def data_randomization_verdict(margin: Estimate, fitted_top1: float, fit_top1: float) -> str:
    """``sensitivity`` of the maps to permuted training labels, or 'not comparable' when the permuted-label model
    did not fit its labels (training top-1 below ``fit_top1``): the test needs a model that memorized them
    (Adebayo et al.'s reached ~100 %), else a map that changes only shows a network that learned nothing."""
    if fitted_top1 < fit_top1:
        return (f"not comparable: the permuted-label model fits {100 * fitted_top1:.0f} % of its training labels "
                f"(the test needs >= {100 * fit_top1:.0f} %)")
    return sensitivity(margin)


def edge_map(x: torch.Tensor) -> torch.Tensor:
    """(N, H, W) Sobel gradient magnitude of the grey image: a 'saliency map' that never reads the weights,
    the trivial insensitive method."""
    grey = x.mean(1, keepdim=True)
    sobel = torch.tensor([[1.0, 0.0, -1.0], [2.0, 0.0, -2.0], [1.0, 0.0, -1.0]])
    kernels = torch.stack([sobel, sobel.T])[:, None]
    g = torch.nn.functional.conv2d(torch.nn.functional.pad(grey, (1, 1, 1, 1), mode="replicate"), kernels)
    return g.pow(2).sum(1).sqrt()


def constant_share(attribution: torch.Tensor) -> float:
    """The share of maps (absolute, 2-D) that are constant, e.g. all zero where a randomized network's ReLUs are
    dead: such a map correlates 0 with anything, so a high share explains a low similarity without any structure."""
    maps = two_d_maps(attribution)[0].reshape(len(attribution), -1)
    return float((maps.max(1) == maps.min(1)).mean())
