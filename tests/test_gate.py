"""The trained-enough gate (cnnvis.gate): each rule fed a case for each answer, against independent numbers."""

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from cnnvis.gate import (combine, filter_gate, filter_structure, noise_quantile, spectral_concentration,
                         training_gate, undertrained)
from cnnvis.training import TrainConfig, fit


def history(losses, top1):
    return pd.DataFrame({"epoch": np.arange(1, len(losses) + 1), "train_loss": losses, "train_top1": top1})


def test_converged_run_above_chance_passes():
    losses = [2.0, 0.5, 0.30, 0.29, 0.285, 0.28, 0.28, 0.279]
    gate = training_gate(history(losses, [0.3, 0.8] + [0.95] * 6), 80, 100, 10)
    assert gate.passed, gate.reason  # (0.2917 - 0.2797) / 0.2917 = 4.1 %
    assert "mean over the last 3 epochs fell 4.1 %" in gate.reason


def test_a_converged_loss_that_jitters_between_epochs_is_a_plateau():
    # the train experiment's last 6 epochs at lr 1e-7: the weights stand still, augmentation moves the loss; the
    # last epoch is 28 % below the one 3 before it, but the window means differ by 5.7 %
    jitter = [0.0886, 0.0701, 0.1109, 0.0759, 0.0984, 0.0798]
    gate = training_gate(history(jitter, [0.97] * 6), 187, 200, 10)
    assert gate.passed and "fell 5.7 %" in gate.reason, gate.reason


def test_a_fitted_loss_still_halving_counts_as_a_plateau():
    fitted = history([1.0, 0.08, 0.04, 0.02, 0.01, 0.005], [0.5, 1.0, 1.0, 1.0, 1.0, 1.0])
    gate = training_gate(fitted, 80, 100, 10)
    assert gate.passed and "fell 96.9 %" in gate.reason  # window means 0.3733 -> 0.0117
    assert not training_gate(fitted, 80, 100, 10, fitted_loss=0.001).passed


@pytest.mark.parametrize("losses, top1, correct, why", [
    ([2.0, 1.5, 1.0, 0.6, 0.3, 0.15], [0.3, 0.5, 0.7, 0.9, 0.95, 0.96], 80, "fell 76.7 %"),  # still falling: 1.5 -> 0.35
    ([2.0] * 6, [0.5] * 6, 80, "training top-1 0.500"),  # plateau far from fitting
    ([2.0, 0.3, 0.3, 0.3, 0.3, 0.3], [0.3] + [0.99] * 5, 14, "held-out top-1 0.140"),  # memorized, at chance
])
def test_each_failed_condition_fails_the_gate(losses, top1, correct, why):
    gate = training_gate(history(losses, top1), correct, 100, 10)
    assert not gate.passed and why in gate.reason


def test_held_out_bound_is_the_wilson_lower_bound():
    # 30 of 100 on 10 classes: Wilson lower bound 0.2189 (z = 1.96, by hand) > 0.1 + 0.1 passes; 27 gives 0.1925
    k, n, z = 30, 100, 1.959964
    p = k / n
    lo = (p + z * z / (2 * n) - z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))) / (1 + z * z / n)
    assert lo == pytest.approx(0.2189, abs=1e-4)
    flat = history([1.0] + [0.1] * 6, [0.5] + [1.0] * 6)
    assert training_gate(flat, 30, 100, 10).passed and not training_gate(flat, 27, 100, 10).passed


def test_a_one_step_run_fails_the_gate(tmp_path):
    torch.manual_seed(0)
    x, y = torch.rand(8, 3, 8, 8), torch.arange(8) % 2
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    h = fit(model, TensorDataset(x, y), None, TrainConfig(epochs=1, batch_size=8, lr=0.01, amp=False), tmp_path)
    assert len(h) == 1
    correct = int((model(x).argmax(1) == y).sum())
    gate = training_gate(h, correct, len(y), 2)
    assert not gate.passed and "fewer than 6 to show a plateau" in gate.reason
    assert undertrained(gate).startswith("not comparable (undertrained: 1 epoch(s)")


def test_spectral_concentration_against_numpy():
    w = np.random.default_rng(1).normal(size=(2, 3, 5, 5))
    power = (np.abs(np.fft.fft2(w)) ** 2).sum(1).reshape(2, -1)
    expected = np.sort(power, 1)[:, -4:].sum(1) / power.sum(1)
    assert spectral_concentration(w, 4) == pytest.approx(expected)
    # a pure cosine along x puts all its power in two bins
    xs = np.arange(8)
    cosine = np.tile(np.cos(2 * np.pi * 2 * xs / 8), (8, 1))[None, None]
    assert spectral_concentration(cosine, 2)[0] == pytest.approx(1.0)


def gabor_and_blob_bank(n=48, c=3, k=7, seed=0):
    """Oriented Gabors (grey) and colour blobs (one channel), with random phase, frequency, size and sign."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:k, :k] - (k - 1) / 2
    bank = []
    for i in range(n):
        if i % 2:
            theta, freq, phase = rng.uniform(0, np.pi), rng.uniform(0.15, 0.35), rng.uniform(0, 2 * np.pi)
            u = xx * np.cos(theta) + yy * np.sin(theta)
            g = np.exp(-(xx ** 2 + yy ** 2) / (2 * (k / 4) ** 2)) * np.cos(2 * np.pi * freq * u + phase)
            bank.append(np.stack([g] * c))
        else:
            blob = np.exp(-(xx ** 2 + yy ** 2) / (2 * rng.uniform(1, 2.5) ** 2)) * rng.choice([-1, 1])
            colour = np.zeros((c, 1, 1))
            colour[rng.integers(c)] = 1
            bank.append(colour * blob)
    return torch.tensor(np.stack(bank))


@pytest.mark.parametrize("k", [7, 11])
def test_gabor_and_colour_blob_changes_pass_white_noise_fails(k):
    g = torch.Generator().manual_seed(3)
    w0 = torch.randn(48, 3, k, k, generator=g) * 0.1
    learned = filter_structure(w0 + gabor_and_blob_bank(k=k), w0)
    assert learned["structured"].mean() > 0.9
    assert filter_gate(learned, "gabor bank").passed
    noise = filter_structure(w0 + torch.randn(48, 3, k, k, generator=g), w0)
    assert noise["structured"].mean() < 0.15
    gate = filter_gate(noise, "noise")
    assert not gate.passed and "noise:" in gate.reason


def test_a_structured_change_too_small_to_show_in_the_filters_fails():
    g = torch.Generator().manual_seed(3)
    w0 = torch.randn(48, 3, 7, 7, generator=g) * 0.1
    bank = gabor_and_blob_bank(k=7)
    scale = 0.2 * w0.flatten(1).norm(dim=1).mean() / bank.flatten(1).norm(dim=1).mean()  # a fifth of ||W0||
    faint = filter_structure(w0 + scale * bank, w0)
    assert (faint["concentration_change"] > faint["noise_q95"]).mean() > 0.9  # the spectrum alone would pass it
    assert faint["relative_change"].median() == pytest.approx(0.2, rel=0.3) and not faint["structured"].any()
    assert not filter_gate(faint, "faint").passed


def test_noise_quantile_is_its_own_95th_percentile():
    q = noise_quantile((3, 7, 7), draws=4000, seed=0)
    fresh = spectral_concentration(torch.randn(4000, 3, 7, 7, generator=torch.Generator().manual_seed(9)))
    assert np.mean(fresh > q) == pytest.approx(0.05, abs=0.015)


def test_combine_lists_the_failed_gates():
    from cnnvis.gate import Gate

    both = combine(Gate(True, "a ok"), Gate(False, "b low"))
    assert not both.passed and both.reason == "b low"
    assert combine(Gate(True, "a"), Gate(True, "b")).reason == "a; b"
    three = combine(Gate(False, "x low"), Gate(True, "ok"), Gate(False, "y low"))
    assert not three.passed and three.reason == "x low (and 1 more of 3 failed)"


def test_shape_mismatch_is_a_clear_error():
    with pytest.raises(ValueError, match="differ in shape"):
        filter_structure(torch.zeros(2, 3, 5, 5), torch.zeros(2, 3, 7, 7))


def test_initial_model_is_the_weights_fit_starts_from(tmp_path):
    from cnnvis.run_gate import initial_model

    def build():
        return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 36, 2))

    for recipe in (TrainConfig(epochs=0, kaiming_init=True, linear_init_std=0.01, amp=False),
                   TrainConfig(epochs=0, paper_init=True, amp=False), TrainConfig(epochs=0, amp=False),
                   TrainConfig(epochs=0, kaiming_init=True, conv1_init_std=0.01, amp=False)):
        torch.manual_seed(5)
        started = build()
        fit(started, TensorDataset(torch.rand(4, 3, 8, 8), torch.zeros(4, dtype=torch.long)), None, recipe,
            tmp_path / str(id(recipe)), seed=5)  # 0 epochs: fit only initializes
        rebuilt = initial_model(build, recipe, 5)
        for a, b in zip(started.state_dict().values(), rebuilt.state_dict().values()):
            assert torch.equal(a, b)
        if recipe.conv1_init_std is not None:  # conv1 alone redrawn small; the next layer keeps He's scale
            assert float(rebuilt[0].weight.std()) == pytest.approx(0.01, rel=0.3)
            assert float(rebuilt[3].weight.std()) > 0.05


def test_a_recipe_field_added_later_moves_no_existing_run_folder(tmp_path):
    from dataclasses import replace

    from cnnvis.training import run_dir

    model, cfg = nn.Linear(2, 2), TrainConfig(epochs=3)
    unset = run_dir(tmp_path, "t", model, {"data": 1}, cfg, 0)
    assert unset.name == "t-b46bc583de"  # the folder this recipe had before conv1_init_std existed
    assert run_dir(tmp_path, "t", model, {"data": 1}, replace(cfg, conv1_init_std=0.01), 0) != unset


def test_run_gate_adds_the_filter_gate_when_conv1_is_given():
    from cnnvis.run_gate import run_gate

    flat = history([1.0] + [0.1] * 6, [0.5] + [1.0] * 6)
    gate, structure = run_gate(flat, 0.8, 100, 10)
    assert gate.passed and structure is None
    w0 = torch.randn(48, 3, 7, 7, generator=torch.Generator().manual_seed(0)) * 0.1
    gate, structure = run_gate(flat, 0.8, 100, 10, w0 + 0.01 * torch.randn(48, 3, 7, 7), w0, "zfnet conv1")
    assert not gate.passed and gate.reason.startswith("zfnet conv1: ") and len(structure) == 48
    gate, _ = run_gate(flat, 0.8, 100, 10, w0 + gabor_and_blob_bank(), w0)
    assert gate.passed


def test_a_gate_written_beside_a_checkpoint_reads_back_and_a_missing_one_fails(tmp_path):
    from cnnvis.gate import Gate, read_gate, write_gate

    assert not read_gate(tmp_path).passed and "never judged" in read_gate(tmp_path).reason
    write_gate(tmp_path, Gate(True, "converged; conv1: 0.61 structured"))
    assert read_gate(tmp_path) == Gate(True, "converged; conv1: 0.61 structured")
