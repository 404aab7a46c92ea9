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

The cascade itself runs every method of ``cams.ALL_METHODS`` (and an edge detector, the baseline that never reads
the weights) and returns each step's per-image similarities, beside the level that maps of images of other classes
share; ``cnnvis.sanity_claims`` decides the paper's findings on them.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
from scipy.stats import rankdata
from skimage.feature import hog
from skimage.metrics import structural_similarity
from torch import nn
from tqdm import tqdm

from cnnvis.cams import ALL_METHODS, build_method
from cnnvis.models import frozen, resolve_layers

MEASURES = ("spearman_abs", "spearman_signed", "ssim", "hog")
MEASURE_NAMES = {"spearman_abs": "Spearman (absolute values)", "spearman_signed": "Spearman (signed)",
                 "ssim": "SSIM", "hog": "HOG similarity"}


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


EDGE = "baseline: edge detector"


def check_methods(names) -> None:
    """A ValueError naming the methods of ``names`` that ``cams.ALL_METHODS`` lacks."""
    unknown = sorted(set(names) - set(ALL_METHODS))
    if unknown:
        raise ValueError(f"unknown method(s) {unknown} in experiment.methods; available: {', '.join(ALL_METHODS)}")


def method_options(model, batch_size: int, scorecam_batch_size: int) -> dict:
    """What cams.build_method reads, with this model's own layers (its last conv, its LayerCAM layers)."""
    return dict(layer=resolve_layers(model, None, "last_conv", "experiment.layer"),
                layercam_layers=resolve_layers(model, None, "layercam", "experiment.layercam_layers"),
                batch_size=batch_size, scorecam_batch_size=scorecam_batch_size)


def seeded_subset(n_total: int, n: int, seed: int) -> np.ndarray:
    """``n`` of the positions 0 .. ``n_total`` - 1, drawn under ``seed``, in increasing order."""
    return np.sort(np.random.default_rng(seed).permutation(n_total)[:n])


def top1_classes(model, x: torch.Tensor, batch_size: int = 32) -> torch.Tensor:
    """The model's top-1 class per image (the class every map explains)."""
    with torch.no_grad():
        return torch.cat([model(x[i:i + batch_size]) for i in range(0, len(x), batch_size)]).argmax(1)


def with_scorecam(methods, scorecam_images: int) -> list[str]:
    return [m for m in methods if m != "scorecam" or scorecam_images > 0]


def attribute(name, model, x, targets, method_options: dict) -> torch.Tensor:
    """``name``'s attributions (``cams.build_method(name, model, **method_options)``, or the edge map) in batches."""
    if name == EDGE:
        return edge_map(x)
    batch_size = method_options["batch_size"]
    with build_method(name, model, **method_options) as method:
        return torch.cat([method.attribute(x[i:i + batch_size], targets[i:i + batch_size])
                          for i in range(0, len(x), batch_size)])


def trained_maps(names, model, x, targets, method_options: dict, scorecam_images: int) -> tuple[dict, dict[str, str]]:
    """Each method's attributions on the trained ``model`` and, for the methods that refuse this network, why
    (CAM needs global average pooling before one linear layer)."""
    maps, skipped = {}, {}
    for name in [*with_scorecam(names, scorecam_images), EDGE]:
        n = min(scorecam_images, len(x)) if name == "scorecam" else len(x)
        try:
            maps[name] = attribute(name, model, x[:n], targets[:n], method_options)
        except ValueError as err:
            skipped[name] = str(err).split("\n")[0]
    return maps, skipped


def other_class_partners(labels, seed: int = 0) -> np.ndarray:
    """Per image, the position of one image of another class, drawn under ``seed`` (-1 where every image shares
    its class): the pair whose trained maps give the unrelated-maps level ``o``."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    partners = np.full(len(labels), -1)
    for i, label in enumerate(labels):
        others = np.flatnonzero(labels != label)
        if len(others):
            partners[i] = rng.choice(others)
    return partners


def other_class_similarity(maps: torch.Tensor, partners: np.ndarray) -> dict[str, np.ndarray]:
    """Per image, each of ``MEASURES`` between its map and its partner's map (``other_class_partners``; NaN where
    it has none): what maps of unrelated images and classes share (centre bias, borders)."""
    paired = partners >= 0
    out = {m: np.full(len(maps), np.nan) for m in MEASURES}
    if paired.any():
        for m, values in similarities(maps[torch.from_numpy(paired)], maps[partners[paired]]).items():
            out[m][paired] = values
    return out


@dataclass(frozen=True)
class Cascade:
    """One network's cascade: step names (``trained`` first, then the layers re-initialized from the top), and per
    method its per-image similarities to the trained maps at each step ({measure: values}), the figure image's
    absolute map at each step, seconds per map, the other-class level (``other_class_similarity``) and the share
    of constant maps at full randomization."""

    steps: list[str]
    sims: dict[str, list[dict[str, np.ndarray]]]
    shown: dict[str, list[np.ndarray]]
    seconds: dict[str, float]
    other: dict[str, dict[str, np.ndarray]]
    constant: dict[str, float]


def cascade(model, x, targets, labels, trained, method_options: dict, seed: int, desc="") -> Cascade:
    """Per method of ``trained`` ({method: its maps on the trained model}): its maps at every cascade step compared
    with the trained ones; ``labels`` (the images' classes) pair each image with one of another class."""
    steps = [("trained", model)] + [(name, frozen(m)) for name, m in cascading_randomization(model, seed=seed)]
    sims, shown, seconds, other, constant = {}, {}, {}, {}, {}
    for name, first in trained.items():
        n = len(first)
        start = time.perf_counter()
        maps = [first] + [attribute(name, m, x[:n], targets[:n], method_options)
                          for _, m in tqdm(steps[1:], desc=f"{desc} {name}", leave=False)]
        seconds[name] = (time.perf_counter() - start) / (n * (len(steps) - 1))
        sims[name] = [similarities(maps[0], m) for m in maps]
        shown[name] = [two_d_maps(m[:1])[0][0] for m in maps]
        other[name] = other_class_similarity(maps[0], other_class_partners(labels[:n], seed))
        constant[name] = constant_share(maps[-1])
    return Cascade([s for s, _ in steps], sims, shown, seconds, other, constant)


def permuted_label_maps(trained, permuted_model, x, targets, labels, method_options: dict, seed: int):
    """Per method of ``trained`` ({method: its maps on the true-label model}): the per-image similarities of its
    maps on ``permuted_model`` (trained on permuted labels) to them, the other-class level, and the share of
    constant maps; as ({method: {measure: values}}, {method: other-class level}, {method: share})."""
    sims, other, constant = {}, {}, {}
    for name, maps in trained.items():
        n = len(maps)
        permuted = attribute(name, permuted_model, x[:n], targets[:n], method_options)
        sims[name] = similarities(maps, permuted)
        other[name] = other_class_similarity(maps, other_class_partners(labels[:n], seed))
        constant[name] = constant_share(permuted)
    return sims, other, constant
