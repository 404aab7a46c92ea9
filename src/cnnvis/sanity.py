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
the weights) and returns its per-method table and the paper's findings decided on it.
"""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd
import torch
from scipy.stats import rankdata
from skimage.feature import hog
from skimage.metrics import structural_similarity
from torch import nn
from tqdm import tqdm

from cnnvis.cams import ALL_METHODS, build_method
from cnnvis.claims import Claim, decide
from cnnvis.models import frozen, resolve_layers
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


EDGE = "baseline: edge detector"
# Adebayo et al. 2018, Sec. 4 / Fig. 2 and 4 (Inception v3, ImageNet): the methods it tested that cams.ALL_METHODS has.
PAPER_FINDINGS = {"saliency": SENSITIVE, "gradcam": SENSITIVE, "guided_backprop": INSENSITIVE,
                  "guided_gradcam": INSENSITIVE}


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


def checkpoint_exists(path: Optional[str], smoke: bool, train_command: str) -> bool:
    """Whether the trained network's checkpoint at ``path`` exists; without one, False under ``smoke`` (the caller
    trains a smoke model) and otherwise a FileNotFoundError naming ``train_command``, which writes it."""
    if path and Path(path).is_file():
        return True
    if not smoke:
        raise FileNotFoundError(f"model.checkpoint={path} does not exist: the trained ZFNet comes from "
                                f"`{train_command}` (which writes data/checkpoints/zfnet_caltech101/last.pt); run it "
                                "first or set model.checkpoint=PATH")
    return False


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


def cascade(model, x, targets, trained, method_options: dict, seed, desc=""):
    """Per method of ``trained`` ({method: its maps on the trained model}): the per-image similarities to them at
    each cascade step, the figure image's absolute map at every step, and seconds per map; also the between-image
    baseline (each trained-model map against the next image's)."""
    steps = [("trained", model)] + [(name, frozen(m)) for name, m in cascading_randomization(model, seed=seed)]
    sims, shown, seconds, across, constant = {}, {}, {}, {}, {}
    for name, first in trained.items():
        n = len(first)
        start = time.perf_counter()
        maps = [first] + [attribute(name, m, x[:n], targets[:n], method_options)
                          for _, m in tqdm(steps[1:], desc=f"{desc} {name}", leave=False)]
        seconds[name] = (time.perf_counter() - start) / (n * (len(steps) - 1))
        sims[name] = [similarities(maps[0], m) for m in maps]
        shown[name] = [two_d_maps(m[:1])[0][0] for m in maps]
        across[name] = other_images_similarity(maps[0])
        constant[name] = constant_share(maps[-1])
    return [s for s, _ in steps], sims, shown, seconds, across, constant


def mean_text(values, digits=3) -> str:
    return bootstrap_mean(values).format(digits)


def final_margin(final, across, fraction: float) -> Estimate:
    """``sensitivity_margin`` of the absolute-map Spearman correlations, against the other images' level."""
    other = None if across is None else across["spearman_abs"]
    return sensitivity_margin(final["spearman_abs"], other, fraction)


def cascade_table(sims, across, seconds, constant, fraction: float) -> pd.DataFrame:
    """One row per method: each measure at full randomization, the rule's verdict, the between-image baseline."""
    rows = []
    for name, per_step in sims.items():
        final = per_step[-1]
        row = {"method": name}
        row.update({f"{m} (fully randomized)": mean_text(final[m]) for m in MEASURES})
        margin = final_margin(final, across[name], fraction)
        row["minus the threshold (spearman_abs)"] = margin.format(3)
        row["verdict"] = sensitivity(margin)
        row["paper (Adebayo 2018)"] = PAPER_FINDINGS.get(name, "not tested" if name != EDGE else "-")
        row["other images' maps (spearman_abs)"] = "-" if across[name] is None else mean_text(across[name]["spearman_abs"])
        row["constant maps (fully randomized)"] = f"{100 * constant[name]:.0f} %"
        row["seconds_per_map"] = round(seconds[name], 4)
        rows.append(row)
    return pd.DataFrame(rows)


def rule_text(fraction: float) -> str:
    return (f"sensitive when the 95 % bootstrap interval (over images) of the mean of s - (o + {fraction:g} (1 - o)) "
            f"lies below 0, insensitive when it lies above 0; s: the Spearman correlation of absolute maps between "
            f"the trained and the fully randomized model, o: the trained map's with the next image's trained map "
            f"(what unrelated maps share; 0 for one image), so the threshold lies {fraction:g} of the way from "
            f"unrelated maps to identical ones")


def cascade_claims(sims, across, network: str, fraction: float) -> list[Claim]:
    """Adebayo et al.'s qualitative findings, each decided by the sensitivity rule on this network."""
    claims = []
    for method, finding in PAPER_FINDINGS.items():
        if method not in sims:
            continue
        final = bootstrap_mean(sims[method][-1]["spearman_abs"])
        margin = final_margin(sims[method][-1], across[method], fraction)
        ours = sensitivity(margin)
        edge = bootstrap_mean(sims[EDGE][-1]["spearman_abs"]).format(3)
        other = "-" if across[method] is None else mean_text(across[method]["spearman_abs"])
        claims.append(Claim(
            paper="Adebayo et al. 2018", source="Fig. 2 / Fig. 4 (Inception v3, ImageNet)",
            claim=f"{method} is {finding} to cascading model-parameter randomization [{network}]",
            paper_number=f"qualitative: {finding}",
            ours=f"spearman_abs trained vs fully randomized: {final.format(3)}; minus the threshold: "
                 f"{margin.format(3)} -> {ours}", n=final.n,
            baseline=f"edge detector (ignores the weights): {edge}; the method's maps of other images: {other}",
            rule=rule_text(fraction), verdict=decide(ours == finding)))
    return claims


def data_randomization_table(trained, permuted_model, x, targets, method_options: dict, fraction: float,
                             fitted_top1: float, fit_top1: float) -> pd.DataFrame:
    """Per method of ``trained`` ({method: its maps on the true-label model}): its maps on ``permuted_model``
    (trained on permuted labels; it fits ``fitted_top1`` of them) compared with the true-label model's."""
    rows = []
    for name, maps in trained.items():
        n = len(maps)
        permuted = attribute(name, permuted_model, x[:n], targets[:n], method_options)
        s = similarities(maps, permuted)
        margin = final_margin(s, other_images_similarity(maps), fraction)
        rows.append({"method": name, **{m: mean_text(s[m]) for m in MEASURES},
                     "minus the threshold (spearman_abs)": margin.format(3),
                     "verdict": data_randomization_verdict(margin, fitted_top1, fit_top1),
                     "constant maps (permuted-label model)": f"{100 * constant_share(permuted):.0f} %"})
    return pd.DataFrame(rows)
