"""Zeiler & Fergus 2013 Sec. 4 / 5.1: architecture variants of ZFNet, and measures of what conv1 learned.

* ``conv1_variant``: ZFNet with its own first layer (7x7, stride 2) or AlexNet's (11x11, stride 4),
  everything after it unchanged (Fig. 6).
* ``arch_variant``: the Table 3 ablations (layers removed, fc6/fc7 resized, conv3-5 widened).
* ``dead_filter_fraction``: conv1 filters whose rectified response carries (almost) no signal.
* ``aliasing_energy_share``: the share of a strided filter's spectral energy above the Nyquist frequency of
  its stride (what sampling every ``stride`` pixels folds back as aliasing).
* ``grid_artifact_score``: how much an image-space pattern (a deconvnet projection of a conv2 unit) is
  concentrated on the lattice frequencies of a stride-``period`` grid, relative to a flat spectrum.
* The ablations' claims (Fig. 6, Table 2, Table 3), decided over training seeds, and Fig. 4's: ``feature_change``,
  how far each layer's output still moves between an early epoch and the last.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from torch import nn

from cnnvis.claims import Claim, Equivalence, Evidence, Threshold, claim_seed, decided
from cnnvis.gate import combine, gated
from cnnvis.hooks import activations
from cnnvis.models import (ALEXNET_SPEC, ZFNET_SPEC, ImageClassifier, UnsupportedModelError, conv_stack_classifier,
                           scaled)
from cnnvis.stats import Estimate, slopes, t_mean

CONV1_ARMS = {
    # ZFNet's 7x7/2 first layer, and AlexNet's 11x11/4 in its place (ZF's pool-then-normalize kept)
    "zfnet": ZFNET_SPEC[0],
    "alexnet_conv1": ALEXNET_SPEC[0][:4] + ZFNET_SPEC[0][4:],
}


def conv1_variant(arm: str, num_classes: int, input_size: int = 224, width: float = 1.0) -> ImageClassifier:
    """ZFNet with the first layer of ``arm`` (``zfnet``: 7x7 stride 2; ``alexnet_conv1``: 11x11 stride 4);
    ``width`` scales every layer's channels (fc6/fc7 included)."""
    if arm not in CONV1_ARMS:
        raise KeyError(f"unknown conv1 arm {arm!r}; choose one of {', '.join(CONV1_ARMS)}")
    fc = (round(4096 * width),) * 2
    return conv_stack_classifier(scaled([CONV1_ARMS[arm], *ZFNET_SPEC[1:]], width), num_classes, input_size, fc)


# Table 3 rows run here: which conv layers (1-5) are kept, fc6/fc7 widths, conv3-5 widths.
ARCH_VARIANTS = {
    "base": {},
    "no_fc7": {"fc": (4096,)},
    "no_fc6_fc7": {"fc": ()},
    "no_conv3_conv4": {"convs": (1, 2, 5)},
    "no_conv3_conv4_fc6_fc7": {"convs": (1, 2, 5), "fc": ()},
    "fc6_fc7_2048": {"fc": (2048, 2048)},
    "fc6_fc7_8192": {"fc": (8192, 8192)},
    "conv345_512_1024_512": {"widths": (512, 1024, 512)},
}

# Zeiler & Fergus 2013 (arXiv 1311.2901v3) Table 3 (ImageNet 2012 validation, error %): train top-1, val top-1,
# val top-5, each row as printed. Removal rows were run on their replication of Krizhevsky et al.; resizing rows on
# their Fig. 3 model (whose val errors, 38.4 / 16.5, are also Table 2's "1 convnet as per Fig. 3" row).
PAPER_TABLE3 = {
    "base": ("Our model (as per Fig. 3)", 33.1, 38.4, 16.5),
    "paper_alexnet_base": ("Our replication of (Krizhevsky et al., 2012), 1 convnet", 35.1, 40.5, 18.1),
    "no_conv3_conv4": ("Removed layers 3,4 (Krizhevsky replication)", 41.8, 45.4, 22.1),
    "no_fc7": ("Removed layer 7 (Krizhevsky replication)", 27.4, 40.0, 18.4),
    "no_fc6_fc7": ("Removed layers 6,7 (Krizhevsky replication)", 27.4, 44.8, 22.4),
    "no_conv3_conv4_fc6_fc7": ("Removed layers 3,4,6,7 (Krizhevsky replication)", 71.1, 71.3, 50.1),
    "fc6_fc7_2048": ("Adjust layers 6,7: 2048 units (Fig. 3 model)", 38.2, 40.2, 17.6),
    "fc6_fc7_8192": ("Adjust layers 6,7: 8192 units (Fig. 3 model)", 22.0, 38.8, 17.0),
    "conv345_512_1024_512": ("Adjust layers 3,4,5: 512,1024,512 maps (Fig. 3 model)", 18.8, 37.5, 16.0),
}


def arch_variant(name: str, num_classes: int, input_size: int = 224, width: float = 1.0) -> ImageClassifier:
    """A Table 3 variant of ZFNet (layers are renumbered consecutively in ``model.layers``); ``width``
    scales every channel count and fc width, the variants' changes included."""
    if name not in ARCH_VARIANTS:
        raise KeyError(f"unknown architecture variant {name!r}; choose one of {', '.join(ARCH_VARIANTS)}")
    v = ARCH_VARIANTS[name]
    spec = [list(row) for row in ZFNET_SPEC]
    for row, channels in zip(spec[2:], v.get("widths", (384, 384, 256))):
        row[0] = channels
    spec = scaled([tuple(spec[i - 1]) for i in v.get("convs", (1, 2, 3, 4, 5))], width)
    fc = tuple(round(f * width) for f in v.get("fc", (4096, 4096)))
    return conv_stack_classifier(spec, num_classes, input_size, fc_widths=fc)


def build_model_at_width(name: str, num_classes: int, input_size: int, width: float = 1.0,
                         pretrained: bool = False, checkpoint=None) -> ImageClassifier:
    """``build_model``'s network, or for zfnet / alexnet with ``width`` != 1 the same network with every
    channel count (and fc width) scaled."""
    from cnnvis.models import BUILDERS, build_model

    if width == 1.0:
        return build_model(name, num_classes, pretrained, checkpoint, input_size)
    if name not in ("zfnet", "alexnet") or pretrained or checkpoint:
        raise UnsupportedModelError(f"experiment.width={width} scales zfnet and alexnet trained from scratch only (the "
                                    f"CPU preset's width): add experiment.width=1.0 for {name}"
                                    + (" with weights" if pretrained or checkpoint else ""))
    return BUILDERS[name](num_classes, input_size, width=width)


def first_conv(model: nn.Module) -> nn.Conv2d:
    return next(m for m in model.modules() if isinstance(m, nn.Conv2d))


@torch.no_grad()
def conv1_responses(model: ImageClassifier, images: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """Rectified conv1 outputs, (filters, images * positions)."""
    conv = first_conv(model)
    outs = []
    for x in images.split(batch_size):
        outs.append(torch.relu(conv(model.normalize(x))).transpose(0, 1).flatten(1))
    return torch.cat(outs, 1)


def dead_filter_fraction(responses: torch.Tensor, rel_threshold: float = 0.01) -> tuple[float, torch.Tensor]:
    """A filter is dead when its rectified response over held-out images carries almost no signal: its
    standard deviation is below ``rel_threshold`` of the layer's median filter's. This catches both filters
    that never fire (ReLU output always 0) and filters whose output is a constant (weights collapsed to a
    uniform, image-independent response); the next layer can use neither. Returns (fraction, mask)."""
    std = responses.float().std(1)
    dead = std < rel_threshold * std.median()
    return float(dead.float().mean()), dead


def aliasing_energy_share(weight: torch.Tensor, stride: int, n_fft: int = 64) -> torch.Tensor:
    """Per filter: the share of spectral energy (summed over input channels, DC removed per channel) at
    frequencies the stride cannot represent, max(|fx|, |fy|) > 1 / (2 * stride) cycles per pixel."""
    w = weight.detach().double()
    w = w - w.mean(dim=(2, 3), keepdim=True)
    power = torch.fft.fft2(w, s=(n_fft, n_fft)).abs().pow(2).sum(1)  # (filters, n_fft, n_fft)
    f = torch.fft.fftfreq(n_fft, dtype=torch.float64).abs()
    above = torch.maximum(f[:, None], f[None, :]) > 1.0 / (2 * stride)
    total = power.sum((1, 2)).clamp_min(1e-30)
    return (power * above).sum((1, 2)) / total


def grid_artifact_score(patterns: torch.Tensor, period: int) -> torch.Tensor:
    """Per pattern (N, C, H, W): the share of (DC-removed) spectral energy on the lattice lines of a
    ``period``-pixel grid (fx or fy a non-zero multiple of 1/period), divided by the share those lines hold
    in a flat spectrum. 1: no grid; >1: energy piles up on the grid (the aliasing artefacts of Fig. 6 (d))."""
    x = patterns.detach().double()
    x = x - x.mean(dim=(2, 3), keepdim=True)
    h, w = x.shape[-2:]
    power = torch.fft.fft2(x).abs().pow(2).sum(1)
    fy, fx = torch.fft.fftfreq(h, dtype=torch.float64), torch.fft.fftfreq(w, dtype=torch.float64)

    def on_lattice(f, n):  # within half a frequency bin of k / period, k != 0 (mod 1)
        k = f * period
        return ((k - k.round()).abs() * n / period < 0.5) & (k.round() % period != 0)

    lines = on_lattice(fy, h)[:, None] | on_lattice(fx, w)[None, :]
    nonzero = torch.ones(h, w, dtype=torch.bool)
    nonzero[0, 0] = False
    share = (power * lines).sum((1, 2)) / power.sum((1, 2)).clamp_min(1e-30)
    return share / (lines & nonzero).double().mean() * nonzero.double().mean()


# ---------------------------------------------------------------- the two ablations' tables and claims

ZF_PAPER = "Zeiler & Fergus 2014"
CONV1_LABELS = {"zfnet": "ZFNet conv1 7x7/2", "alexnet_conv1": "AlexNet conv1 11x11/4"}
MIN_SEEDS = 5  # an ablation over fewer training seeds is inconclusive unless its interval already decides


def seed_differences(per_run: pd.DataFrame, metric: str, first: str, second: str) -> np.ndarray:
    """Per seed, ``metric`` of the arm labelled ``first`` minus that of ``second`` (both arms of a seed share the
    data order and the initial weights outside conv1), in seed order."""
    a = per_run[per_run.arm == first].set_index("seed")[metric]
    b = per_run[per_run.arm == second].set_index("seed")[metric]
    seeds = a.index.intersection(b.index).sort_values()
    if len(seeds) == 0:
        raise ValueError(f"no seed trained both {first!r} and {second!r}; set experiment.arms to both arms")
    return (a[seeds] - b[seeds]).to_numpy(dtype=float)


def seed_difference(per_run: pd.DataFrame, metric: str, first: str, second: str) -> Estimate:
    """The mean over seeds of ``seed_differences`` with its t interval."""
    return t_mean(seed_differences(per_run, metric, first, second))


def seeds_claim(source: str, claim: str, paper_number: str, what: str, per_seed, baseline: str, rule, gate=None,
                ours: str | None = None) -> Claim:
    """A claim decided by ``rule`` on the t interval over seeds of ``per_seed`` (one value per training seed, paired
    within the seed); "not comparable (undertrained: ...)" when ``gate`` failed."""
    evidence = Evidence("t_mean", (np.asarray(per_seed, dtype=float),), rule, claim_seed(source, claim))
    est = evidence.estimate()
    return gated(decided(ZF_PAPER, source, claim, paper_number, ours or f"{what}: {est.format()}", est.n, baseline,
                         rule.text(f"the per-seed {what} (t over seeds)"), [evidence]), gate)


def conv1_claims(per_run: pd.DataFrame, n_classes: int, trained=None, filters_gate=None) -> list[Claim]:
    """The paper's Fig. 6 claims, each decided on the t interval over seeds of the per-seed AlexNet-vs-ZF difference
    (``Threshold(0, min_n=MIN_SEEDS)``); conv1's measures by what training changed (trained minus initial), since the
    strides differ before training. With the gates (``cnnvis.gate``): the filter and feature claims need ``trained``
    and ``filters_gate`` to pass, the accuracy claim ``trained``; else they read "not comparable (undertrained: ...)"."""
    features_gate = None if trained is None and filters_gate is None else \
        combine(*(g for g in (trained, filters_gate) if g is not None))
    per_run = per_run.assign(
        dead_conv1_change=per_run.dead_conv1_fraction - per_run.dead_conv1_fraction_init,
        conv1_above_nyquist_change=per_run.conv1_energy_above_nyquist - per_run.conv1_energy_above_nyquist_init)
    a, z = CONV1_LABELS["alexnet_conv1"], CONV1_LABELS["zfnet"]
    diff = {m: seed_differences(per_run, m, a, z) for m in
            ("dead_conv1_change", "dead_conv1_fraction_init", "conv1_above_nyquist_change",
             "conv1_energy_above_nyquist_init", "conv2_grid_score", "conv2_grid_score_init")}
    rule = Threshold(0.0, min_n=MIN_SEEDS)
    return [
        seeds_claim("Fig. 6 (b) vs (c)", "AlexNet-style conv1 has dead filters; ZF's 7x7/2 fewer", "qualitative",
                    "training's change of the dead fraction, AlexNet minus ZF", diff["dead_conv1_change"],
                    f"dead fraction at initialization, AlexNet minus ZF: {t_mean(diff['dead_conv1_fraction_init']).format()}",
                    rule, features_gate),
        seeds_claim("Fig. 6 (b) vs (c)", "11x11/4 filters mix very high and low frequencies (aliasing); 7x7/2 cleaner",
                    "qualitative", "training's change of the conv1 energy share above Nyquist, AlexNet minus ZF",
                    diff["conv1_above_nyquist_change"], f"the share at initialization (the stride alone), AlexNet minus "
                    f"ZF: {t_mean(diff['conv1_energy_above_nyquist_init']).format()}", rule, features_gate),
        seeds_claim("Fig. 6 (d) vs (e)", "stride 4 gives aliasing artefacts in conv2 features", "qualitative",
                    "conv2 grid score after training, AlexNet minus ZF", diff["conv2_grid_score"],
                    f"the same before training: {t_mean(diff['conv2_grid_score_init']).format()}", rule, features_gate),
        seeds_claim("Table 2", "the ZF first layer classifies better",
                    "ImageNet val top-1 error 40.5% (Krizhevsky replication) -> 38.4% (Fig. 3 model; conv2 stride also "
                    "changed): 2.1 points", "test top-1 accuracy, ZF minus AlexNet", seed_differences(per_run, "test_top1", z, a),
                    f"chance: {1 / n_classes:.3f} top-1 for either arm", rule, trained),
    ]


# The paper's claims of Table 3: (claim, variants whose per-seed change from the base decides it, rule on each).
TABLE3_CLAIMS = [
    ("removing layers 6,7 costs little", ["no_fc6_fc7"], Threshold(5.0, above=False, min_n=MIN_SEEDS)),
    ("removing layers 3,4,6,7 costs a lot", ["no_conv3_conv4_fc6_fc7"], Threshold(10.0, min_n=MIN_SEEDS)),
    ("increasing the size of the middle conv layers (3,4,5: 512, 1024, 512 maps) gives a useful gain",
     ["conv345_512_1024_512"], Threshold(0.0, above=False, min_n=MIN_SEEDS)),
    ("changing the size of layers 6,7 (2048 or 8192 units) makes little difference", ["fc6_fc7_2048", "fc6_fc7_8192"],
     Equivalence(5.0, min_n=MIN_SEEDS)),
]


def paper_delta(variant: str) -> float:
    """The paper's change in val top-1 error from the base its row was run on."""
    base = "paper_alexnet_base" if "Krizhevsky" in PAPER_TABLE3[variant][0] else "base"
    return PAPER_TABLE3[variant][2] - PAPER_TABLE3[base][2]


def arch_summary_table(runs: pd.DataFrame, changes: dict) -> pd.DataFrame:
    """One row per variant: errors as mean over seeds with a 95 % t interval, the paired change from the base
    (``changes``: variant -> per-seed change in test top-1 error)."""
    rows = []
    for variant, g in runs.groupby("variant", sort=False):
        rows.append({"variant": variant, "params_M": round(float(g.params_M.iloc[0]), 3),
                     **{c: t_mean(g[c]).format(1) for c in ("train_top1_err", "test_top1_err", "test_top5_err")},
                     "test_top1_err_change": "-" if variant == "base" else t_mean(changes[variant]).format(1),
                     "paper_row": PAPER_TABLE3[variant][0], "paper_train_top1_err": PAPER_TABLE3[variant][1],
                     "paper_val_top1_err": PAPER_TABLE3[variant][2], "paper_val_top5_err": PAPER_TABLE3[variant][3],
                     "paper_val_top1_err_change": paper_delta(variant)})
    return pd.DataFrame(rows)


def table3_claims(changes: dict, base_err: Estimate, gate=None) -> list[Claim]:
    """The paper's Table 3 claims, each decided by its rule on the t interval over seeds of each variant's per-seed
    change in test top-1 error from the base (``changes``: variant -> per-seed values, points); a claim whose
    variants did not all run is left out; "not comparable (undertrained: ...)" when ``gate`` (every run's
    trained-enough gate) failed."""
    claims = []
    for claim, variants, rule in TABLE3_CLAIMS:
        if not all(v in changes for v in variants):
            continue
        seed = claim_seed("Table 3", claim)
        evidence = [Evidence("t_mean", (np.asarray(changes[v], dtype=float),), rule, seed) for v in variants]
        estimates = [e.estimate() for e in evidence]
        name = (lambda v: f"{v}: ") if len(variants) > 1 else (lambda v: "")
        claims.append(gated(decided(
            ZF_PAPER, "Table 3", claim, "; ".join(f"{name(v)}{paper_delta(v):+.1f} points (ImageNet)" for v in variants),
            "; ".join(f"{name(v)}{est.format(1)}" for v, est in zip(variants, estimates)), min(e.n for e in estimates),
            f"the base network's top-1 error: {base_err.format(1)}",
            rule.text("the per-seed change in test top-1 error from the base (points, t over seeds)")
            + (" for each variant" if len(variants) > 1 else ""), evidence), gate))
    return claims


# ---------------------------------------------------------------- Fig. 4: how far each layer still moves after an early epoch

PAPER_EARLY_EPOCH, PAPER_EPOCHS = 5, 64  # "the lower layers converge within a few epochs" of the paper's 64


def early_epoch(kept_epochs: list[int], epochs: int) -> int:
    """The kept epoch nearest the paper's epoch 5 of 64 scaled to a run of ``epochs`` (its "few epochs")."""
    target = PAPER_EARLY_EPOCH * epochs / PAPER_EPOCHS
    return min(kept_epochs, key=lambda e: (abs(e - target), e))


@torch.no_grad()
def feature_change(model: nn.Module, final: nn.Module, x: torch.Tensor, layers: list[str],
                   batch_size: int = 32) -> dict[str, np.ndarray]:
    """Per layer, per image of ``x``: 1 - the cosine similarity of the layer's output (flattened) under ``model``
    (an earlier epoch's weights) and under ``final`` (the last epoch's): 0 when the layer no longer changes what it
    computes, up to 1 (or 2: reversed) as it does; NaN where either output is all zero."""
    out = {layer: [] for layer in layers}
    for chunk in x.split(batch_size):
        now, last = activations(model, chunk, layers), activations(final, chunk, layers)
        for layer in layers:
            a, b = now[layer].flatten(1).double(), last[layer].flatten(1).double()
            norms = a.norm(dim=1) * b.norm(dim=1)
            cos = (a * b).sum(1) / norms.clamp_min(1e-300)
            out[layer].append(torch.where(norms > 0, 1 - cos, torch.full_like(cos, float("nan"))).numpy())
    return {layer: np.concatenate(parts) for layer, parts in out.items()}


EVOLUTION_CLAIM = "the lower layers converge within a few epochs; the upper layers only after many more"


def remaining_share(change: dict[str, np.ndarray], from_init: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Per layer, per image: the change still to come after an epoch (``feature_change`` of that epoch against the
    last) as a share of the whole run's (``feature_change`` of the initial weights against the last): near 0 once a
    layer has settled, near 1 while it has barely started. Dividing by each layer's own total keeps upper layers
    from looking unsettled only because they inherit every change below them."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return {layer: np.where(from_init[layer] > 0, change[layer] / from_init[layer], np.nan) for layer in change}


def evolution_claim(change: dict[str, np.ndarray], from_init: dict[str, np.ndarray], layers: list[str], early: int,
                    last: int, gate=None) -> Claim:
    """Fig. 4's observation, decided on the per-image slope over the layers (input to output) of ``remaining_share``
    after epoch ``early``: reproduced when its 95 % bootstrap interval over images lies above 0 (the upper layers
    have more of their change still to come); "not comparable (undertrained: ...)" when the run failed ``gate``."""
    share = remaining_share(change, from_init)
    per_image = slopes(np.stack([share[layer] for layer in layers], 1))
    rule = Threshold(0.0)
    evidence = Evidence("bootstrap_mean", (per_image,), rule, claim_seed("Fig. 4", EVOLUTION_CLAIM))
    est = evidence.estimate()
    mean_share = ", ".join(f"{layer} {np.nanmean(share[layer]):.2f}" for layer in layers)
    return gated(decided(
        ZF_PAPER, "Fig. 4", EVOLUTION_CLAIM, "qualitative (lower layers settle within a few of 64 epochs, upper layers "
        "after 40-50)", f"slope over {layers[0]}..{layers[-1]} of the share of change left after epoch {early}: "
        f"{est.format(3)} per layer", est.n, f"mean share left after epoch {early} of {last}: {mean_share}",
        rule.text(f"the per-image least-squares slope, over layer index, of the share of each layer's change (1 - "
                  f"cosine of its output against epoch {last}'s) still to come after epoch {early} (bootstrap over "
                  "held-out images)"), [evidence]), gate)
