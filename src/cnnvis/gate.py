"""The trained-enough gate: a run that trains a network is judged only when it has learned.

Two tests, each a stated rule computed from numbers the run already has:

- ``training_gate``: training has converged (the mean training loss of the last ``window`` epochs is less than
  ``max_relative_drop`` below the mean of the ``window`` epochs before them, or the last loss is below
  ``fitted_loss``, and the last epoch's training top-1 is at least ``min_train_top1``) and held-out top-1 is clearly above chance (the Wilson 95 % interval's lower bound exceeds
  chance by ``min_margin``).
- ``filter_gate``: where conv1 filters are shown or judged, their change from initialization W - W0 has structure
  white noise lacks and is large enough to show in W. Per filter, the *spectral concentration* of W - W0 (the
  share of its 2-D power spectrum, summed over input channels, in its ``top_bins`` largest frequency bins: a Gabor
  puts its power in a pair of bins, a colour blob at DC, noise spreads it evenly) is compared with the same
  statistic of seeded white-noise draws of the same shape; a filter is *structured* above the noise's 95th
  percentile when its change is also at least ``MIN_RELATIVE_CHANGE`` of its initial norm (a structured but tiny
  change leaves W looking like noise). An arm passes when the Wilson lower bound of its structured share exceeds
  ``min_structured_share`` (noise: 5 % by construction).

A failed gate turns every claim that needs training into "not comparable (undertrained: <reason>)".
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from cnnvis.claims import NOT_COMPARABLE, Claim
from cnnvis.stats import proportion


@dataclass(frozen=True)
class Gate:
    """One gate's outcome: ``passed`` and the numbers behind it, in one line (``reason``)."""

    passed: bool
    reason: str

    def __bool__(self) -> bool:
        return self.passed


GATE_FILE = "gate.json"  # beside a checkpoint: the gate its training run passed or failed


def write_gate(checkpoint_dir, gate: Gate) -> Path:
    """Record ``gate`` beside a run's checkpoints, so a later experiment that shows them knows the verdict."""
    path = Path(checkpoint_dir) / GATE_FILE
    path.write_text(json.dumps({"trained_enough": gate.passed, "reason": gate.reason}, indent=1))
    return path


def read_gate(checkpoint_dir) -> Gate:
    """The gate recorded beside a checkpoint; a checkpoint without one counts as not shown to have learned."""
    path = Path(checkpoint_dir) / GATE_FILE
    if not path.is_file():
        return Gate(False, f"no {GATE_FILE} beside {checkpoint_dir}: its training run was never judged")
    record = json.loads(path.read_text())
    return Gate(bool(record["trained_enough"]), record["reason"])


def combine(*gates: Gate) -> Gate:
    """All must pass; the reason is the first failed gate's (with how many others failed), or all of them when
    every one passed."""
    failed = [g for g in gates if not g.passed]
    if not failed:
        return Gate(True, "; ".join(g.reason for g in gates))
    more = f" (and {len(failed) - 1} more of {len(gates)} failed)" if len(failed) > 1 else ""
    return Gate(False, failed[0].reason + more)


def undertrained(gate: Gate) -> str:
    """What a claim that needs training says when the gate failed."""
    return f"not comparable (undertrained: {gate.reason})"


def gated(claim: Claim, gate: Gate | None) -> Claim:
    """``claim`` as computed when ``gate`` passed (or is None); else its verdict is "not comparable" and its
    reason "undertrained: <the gate's numbers>"."""
    if gate is None or gate.passed:
        return claim
    return replace(claim, verdict=NOT_COMPARABLE, reason=f"undertrained: {gate.reason}")


# ---------------------------------------------------------------- convergence and held-out accuracy


def training_gate(history: pd.DataFrame, held_out_correct: int, held_out_n: int, n_classes: int, window: int = 3,
                  max_relative_drop: float = 0.10, min_train_top1: float = 0.90, min_margin: float = 0.10,
                  fitted_loss: float = 0.05) -> Gate:
    """Converged and above chance (module docstring). ``history`` has one row per epoch with ``train_loss``
    and ``train_top1`` (what ``cnnvis.training.fit`` returns); a run shorter than ``2 * window`` epochs has no
    plateau to show and fails. Window means, not two epochs: at a small loss one epoch's augmentation noise moves
    it by 20-30 % with the weights standing still (lr 1e-7). A loss below ``fitted_loss`` nats (the true class's
    mean probability above about 0.95) counts as a plateau however fast it still falls relatively (a fitted training
    set's loss keeps halving)."""
    if n_classes < 2 or held_out_n < 1:
        raise ValueError(f"the gate needs at least 2 classes and 1 held-out image (got {n_classes}, {held_out_n})")
    loss = history["train_loss"].to_numpy(dtype=float)
    top1 = float(history["train_top1"].iloc[-1]) if len(history) else float("nan")
    if len(loss) < 2 * window:
        drop, plateau = float("nan"), False
        plateau_text = f"{len(loss)} epoch(s), fewer than {2 * window} to show a plateau"
    else:
        before, last = loss[-2 * window:-window].mean(), loss[-window:].mean()
        drop = (before - last) / before if before > 0 else 0.0
        plateau = bool(np.isfinite(drop) and (drop < max_relative_drop or loss[-1] < fitted_loss))
        plateau_text = (f"training loss {loss[-1]:.3g}; its mean over the last {window} epochs fell {100 * drop:.1f} "
                        f"% from the {window} before (bound {100 * max_relative_drop:g} %, or a loss below "
                        f"{fitted_loss:g})")
    fitted = bool(np.isfinite(top1) and top1 >= min_train_top1)
    chance = 1 / n_classes
    held = proportion(held_out_correct, held_out_n)
    above = bool(held.lo > chance + min_margin)
    passed = plateau and fitted and above
    reason = (f"{plateau_text}; training top-1 {top1:.3f} (needs >= {min_train_top1:g}); held-out top-1 "
              f"{held.format(3)}, chance {chance:.3f} (lower bound needs > {chance + min_margin:.3f})")
    return Gate(passed, reason)


# ---------------------------------------------------------------- conv1 filter structure


# a change of half the initial norm carries about a fifth of the filter's energy (0.25 / 1.25): enough to be seen
MIN_RELATIVE_CHANGE = 0.5


def spectral_concentration(filters, top_bins: int = 4) -> np.ndarray:
    """Per filter of (F, C, k, k) weights: the share of its power spectrum (|2-D DFT|^2 summed over the C input
    channels) in its ``top_bins`` largest bins. Scale-free; all-zero filters give NaN."""
    w = torch.as_tensor(filters).detach().double().cpu()
    if w.ndim != 4:
        raise ValueError(f"filters must be (F, C, k, k), got shape {tuple(w.shape)}")
    power = torch.fft.fft2(w).abs().pow(2).sum(1).flatten(1)  # (F, k * k)
    total = power.sum(1)
    top = power.topk(min(top_bins, power.shape[1]), dim=1).values.sum(1)
    return torch.where(total > 0, top / total.clamp(min=1e-300), torch.full_like(total, float("nan"))).numpy()


def noise_quantile(shape, top_bins: int = 4, draws: int = 2000, q: float = 0.95, seed: int = 0) -> float:
    """The ``q`` quantile of ``spectral_concentration`` over seeded white-noise filters of ``shape`` (C, k, k)."""
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn((draws, *shape), generator=g, dtype=torch.float64)
    return float(np.quantile(spectral_concentration(noise, top_bins), q))


def filter_structure(weights, initial, top_bins: int = 4, draws: int = 2000, seed: int = 0,
                     min_relative_change: float = MIN_RELATIVE_CHANGE) -> pd.DataFrame:
    """Per filter: the spectral concentration of W - W0, of W0 alone, the white-noise 95th percentile for that
    shape, the relative change ||W - W0|| / ||W0||, and whether W - W0 is beyond the noise percentile *and* large
    enough to show in W (``structured``)."""
    w, w0 = torch.as_tensor(weights).detach().double().cpu(), torch.as_tensor(initial).detach().double().cpu()
    if w.shape != w0.shape:
        raise ValueError(f"weights {tuple(w.shape)} and initial weights {tuple(w0.shape)} differ in shape")
    change = spectral_concentration(w - w0, top_bins)
    threshold = noise_quantile(tuple(w.shape[1:]), top_bins, draws, 0.95, seed)
    relative = ((w - w0).flatten(1).norm(dim=1) / w0.flatten(1).norm(dim=1).clamp(min=1e-300)).numpy()
    return pd.DataFrame({"filter": np.arange(len(w)), "concentration_change": change,
                         "concentration_init": spectral_concentration(w0, top_bins), "noise_q95": threshold,
                         "relative_change": relative,
                         "structured": (np.nan_to_num(change, nan=-1.0) > threshold) & (relative >= min_relative_change)})


def filter_gate(per_filter: pd.DataFrame, arm: str = "conv1", min_structured_share: float = 0.20) -> Gate:
    """An arm's filters pass when the Wilson 95 % lower bound of the share of structured filters (beyond white
    noise's 95th percentile, so noise scores about 0.05) exceeds ``min_structured_share``."""
    share = proportion(per_filter["structured"].to_numpy(dtype=bool))
    passed = bool(share.lo > min_structured_share)
    median = float(np.nanmedian(per_filter["concentration_change"]))
    moved = float(np.nanmedian(per_filter["relative_change"]))
    return Gate(passed, f"{arm}: {share.format(2)} of filters' W - W0 structured beyond white noise's 95th "
                        f"percentile and >= {MIN_RELATIVE_CHANGE:g} of ||W0|| (lower bound needs > "
                        f"{min_structured_share:g}; median spectral concentration {median:.3f} vs noise q95 "
                        f"{float(per_filter['noise_q95'].iloc[0]):.3f}; median ||W - W0|| / ||W0|| {moved:.2f})")


def figure_note(gate: Gate) -> str:
    """What a figure title adds for a run that failed the gate: a second line with its first failed reason
    (nothing when it passed)."""
    if gate.passed:
        return ""
    return f"\nUNDERTRAINED (not comparable): {gate.reason.split('; ')[0]}"


def gate_rows(runs: pd.DataFrame, label: str) -> Gate:
    """The gates recorded in a runs table (columns ``trained_enough`` and ``gate``), each named by ``label``
    formatted with the row (e.g. "{network} seed {seed}"), combined."""
    return combine(*(Gate(bool(r["trained_enough"]), f"{label.format(**r)}: {r['gate']}") for _, r in runs.iterrows()))
