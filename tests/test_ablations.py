"""Architecture variants (ZF Fig. 6 / Table 3) and the conv1 measures, against hand-built answers."""

import numpy as np
import pytest
import torch
from torch import nn

from cnnvis.ablations import (ARCH_VARIANTS, aliasing_energy_share, arch_variant, conv1_responses, conv1_variant,
                              dead_filter_fraction, first_conv, grid_artifact_score)
from cnnvis.models import alexnet, zfnet
from cnnvis.training import kaiming_init_, paper_init_


def test_conv1_arms_differ_only_in_conv1():
    zf, alex = conv1_variant("zfnet", 5, 112), conv1_variant("alexnet_conv1", 5, 112)
    assert (first_conv(zf).kernel_size, first_conv(zf).stride) == ((7, 7), (2, 2))
    assert (first_conv(alex).kernel_size, first_conv(alex).stride) == ((11, 11), (4, 4))
    rest = lambda m: [(n, tuple(p.shape)) for n, p in m.named_parameters() if not n.startswith(("features.conv1", "classifier.fc6"))]
    assert rest(zf) == rest(alex)
    assert str(zf) == str(zfnet(5, 112))  # the ZF arm is the harness's ZFNet (so runs are shared with `train`)
    assert alex(torch.rand(2, 3, 112, 112)).shape == (2, 5)
    with pytest.raises(KeyError, match="zfnet, alexnet_conv1"):
        conv1_variant("vgg", 5)


def _convs_and_fcs(model):
    convs = [m.out_channels for m in model.features if isinstance(m, nn.Conv2d)]
    fcs = [m.out_features for m in model.classifier if isinstance(m, nn.Linear)]
    return convs, fcs


@pytest.mark.parametrize("name, convs, fcs", [
    ("base", [96, 256, 384, 384, 256], [4096, 4096, 7]),
    ("no_fc7", [96, 256, 384, 384, 256], [4096, 7]),
    ("no_fc6_fc7", [96, 256, 384, 384, 256], [7]),
    ("no_conv3_conv4", [96, 256, 256], [4096, 4096, 7]),
    ("no_conv3_conv4_fc6_fc7", [96, 256, 256], [7]),
    ("fc6_fc7_2048", [96, 256, 384, 384, 256], [2048, 2048, 7]),
    ("fc6_fc7_8192", [96, 256, 384, 384, 256], [8192, 8192, 7]),
    ("conv345_512_1024_512", [96, 256, 512, 1024, 512], [4096, 4096, 7]),
])
def test_table3_variants(name, convs, fcs):
    model = arch_variant(name, 7, 64)
    assert _convs_and_fcs(model) == (convs, fcs)
    assert model(torch.rand(1, 3, 64, 64)).shape == (1, 7)


def test_every_variant_is_tested_and_unknown_names_fail():
    assert len(ARCH_VARIANTS) == 8
    with pytest.raises(KeyError, match="no_fc7"):
        arch_variant("no_fc9", 3)


def _naive_share(w: np.ndarray, stride: int, n: int) -> float:
    """The same quantity by an explicit DFT sum (no FFT)."""
    w = w - w.mean(axis=(1, 2), keepdims=True)
    c, k, _ = w.shape
    nyq = 1 / (2 * stride)
    total = above = 0.0
    for u in range(n):
        for v in range(n):
            fy, fx = (u if u < n / 2 else u - n) / n, (v if v < n / 2 else v - n) / n
            e = 0.0
            for ch in range(c):
                s = sum(w[ch, y, x] * np.exp(-2j * np.pi * (u * y + v * x) / n) for y in range(k) for x in range(k))
                e += abs(s) ** 2
            total += e
            above += e if max(abs(fy), abs(fx)) > nyq else 0.0
    return above / total


def test_aliasing_share_matches_an_explicit_dft_and_known_filters():
    rng = np.random.default_rng(0)
    w = rng.normal(size=(2, 3, 5, 5))
    got = aliasing_energy_share(torch.from_numpy(w), stride=2, n_fft=16)
    for i in range(2):
        assert float(got[i]) == pytest.approx(_naive_share(w[i], 2, 16), rel=1e-9)
    y, x = np.mgrid[:7, :7]
    checker = np.broadcast_to((-1.0) ** (x + y), (3, 7, 7))  # all energy at (0.5, 0.5) cycles/pixel
    y, x = np.mgrid[:15, :15]
    blob = np.broadcast_to(np.exp(-((x - 7) ** 2 + (y - 7) ** 2) / 8.0), (1, 3, 15, 15))  # smooth: low frequencies
    assert float(aliasing_energy_share(torch.tensor(checker[None].copy()), stride=2)) > 0.95
    assert float(aliasing_energy_share(torch.tensor(blob.copy()), stride=2)) < 0.05


def test_dead_filters_are_the_silent_and_the_constant_ones():
    torch.manual_seed(0)
    model = zfnet(3, 64)
    conv = first_conv(model)
    with torch.no_grad():
        conv.bias[:5] = -1e3  # never fire
        conv.weight[5:8] = 0.0  # a constant response (the bias alone)
        conv.bias[5:8] = 0.3
    _, dead = dead_filter_fraction(conv1_responses(model, torch.rand(4, 3, 64, 64)))
    assert dead.nonzero().flatten().tolist() == list(range(8))


def test_grid_score_sees_a_stride_grid_and_not_smooth_noise():
    torch.manual_seed(0)
    smooth = torch.nn.functional.avg_pool2d(torch.randn(4, 3, 72, 72), 9, 1, 4)
    y, x = torch.meshgrid(torch.arange(72), torch.arange(72), indexing="ij")
    grid = smooth + 0.5 * ((y % 4 == 0) | (x % 4 == 0)).float()  # a period-4 grid on top
    assert float(grid_artifact_score(grid, 4).mean()) > 3 * float(grid_artifact_score(smooth, 4).mean())
    white = torch.randn(64, 3, 72, 72)
    assert float(grid_artifact_score(white, 4).mean()) == pytest.approx(1.0, abs=0.05)  # flat spectrum: 1


def test_paper_init_shrinks_the_signal_and_he_init_keeps_it():
    """Why the CPU presets use He init: with N(0, 1e-2) the 8-layer net's logits start ~1e4 times smaller."""
    x = torch.rand(4, 3, 112, 112)
    stds = {}
    for name, init in [("paper", paper_init_), ("he", kaiming_init_)]:
        torch.manual_seed(0)
        model = zfnet(10, 112).eval()
        init(model)
        with torch.no_grad():
            stds[name] = float(model(x).std())
    assert stds["paper"] < 1e-3 < 0.3 < stds["he"]


def test_he_init_with_small_linear_std_keeps_a_wide_fc_head_calm():
    """cam_gap's AlexNet (fc 9216-4096-4096): He init everywhere starts with huge logits and the first steps
    kill every ReLU; N(0, 1e-2) on the Linear layers (torchvision's VGG) keeps the logits small, convs He."""
    x = torch.rand(2, 3, 112, 112)
    stds = {}
    for linear_std in (None, 0.01):
        torch.manual_seed(0)
        model = alexnet(24, 112).eval()
        kaiming_init_(model, linear_std)
        with torch.no_grad():
            stds[linear_std] = float(model(x).std())
        conv1 = model.features[0].weight
        assert float(conv1.std()) == pytest.approx((2 / conv1[0].numel()) ** 0.5, rel=0.1)  # convs stay He
    fc_weights = [m.weight for m in model.modules() if isinstance(m, nn.Linear)]
    assert all(float(w.std()) == pytest.approx(0.01, rel=0.05) for w in fc_weights)
    assert stds[0.01] < 0.05 * stds[None]


def table3(**changes):
    """{short name: claim} of the Table 3 claims whose variants are in ``changes`` (per-seed changes, points)."""
    from cnnvis.ablations import TABLE3_CLAIMS, table3_claims
    from cnnvis.stats import t_mean

    short = dict(zip([text for text, _, _ in TABLE3_CLAIMS], ["little", "lot", "widen", "resize"]))
    return {short[c.claim]: c for c in table3_claims({"base": [0.0] * 2, **changes}, t_mean([40.0, 42.0]))}


def test_table3_claims_give_each_answer_on_the_interval_over_seeds():
    from cnnvis.claims import CONTRADICTED, REPRODUCED

    five = dict(no_fc6_fc7=[1.0, 1.5, 0.5, 1.2, 0.8], no_conv3_conv4_fc6_fc7=[20.0, 21.0, 19.0, 22.0, 20.5],
                conv345_512_1024_512=[-2.0, -1.5, -2.5, -1.0, -2.2], fc6_fc7_2048=[0.5, -0.5, 1.0, 0.0, 0.2],
                fc6_fc7_8192=[-1.0, 0.5, 0.0, -0.5, 0.3])
    claims = table3(**five)
    assert [c.verdict for c in claims.values()] == [REPRODUCED] * 4 and len(claims) == 4
    assert claims["little"].paper_number == "+4.3 points (ImageNet)" and claims["widen"].paper_number == "-0.9 points (ImageNet)"
    assert claims["resize"].paper_number == "fc6_fc7_2048: +1.8 points (ImageNet); fc6_fc7_8192: +0.4 points (ImageNet)"
    # the opposite of each effect, every seed agreeing
    against = table3(no_fc6_fc7=[12.0, 13.0, 11.0], conv345_512_1024_512=[2.0, 3.0, 2.5],
                     fc6_fc7_2048=[9.0, 10.0, 11.0], fc6_fc7_8192=[0.0, 0.5, -0.5])
    assert {k: c.verdict for k, c in against.items()} == {"little": CONTRADICTED, "widen": CONTRADICTED,
                                                           "resize": CONTRADICTED}


def test_table3_two_seeds_that_straddle_the_bar_are_inconclusive_not_not_reproduced():
    from cnnvis.claims import INCONCLUSIVE

    # the committed row -2.7 [-28.1, 22.7] (n = 2): it includes the +5-point bar, so it decides nothing
    little = table3(no_fc6_fc7=[-4.7, -0.7])["little"]
    assert little.ours == "-2.7 [-28.1, 22.7] (n = 2)" and little.verdict == INCONCLUSIVE
    assert little.reason.startswith("n < 5") and "smallest detectable effect" in little.reason
    one = table3(no_fc6_fc7=[1.0])["little"]
    assert one.verdict == INCONCLUSIVE and one.ours == "1.0 (n = 1)"  # one seed never decides
    assert len(table3(no_fc6_fc7=[1.0, 2.0])) == 1  # a claim whose variants did not run is left out
    straddle = table3(conv345_512_1024_512=[-2.0, 1.0], fc6_fc7_2048=[0.0, 1.0], fc6_fc7_8192=[3.0, 6.0])
    assert {k: c.verdict for k, c in straddle.items()} == {"widen": INCONCLUSIVE, "resize": INCONCLUSIVE}
    assert all(c.reason.startswith("n < 5") for c in straddle.values())  # Equivalence says so too


def test_table3_claims_carry_the_values_that_decide_them():
    from cnnvis.claims import recomputed_verdict

    for c in table3(no_fc6_fc7=[1.0, 1.5, 0.5], fc6_fc7_2048=[0.5, -0.5, 1.0], fc6_fc7_8192=[9.0, 10.0, 11.0]).values():
        assert recomputed_verdict(c.evidence, ()) == c.verdict and c.evidence[0].seed != 0


def test_table3_claims_of_undertrained_runs_are_not_comparable():
    from cnnvis.claims import NOT_COMPARABLE, REPRODUCED
    from cnnvis.gate import Gate
    from cnnvis.stats import t_mean
    from cnnvis.ablations import table3_claims

    base = t_mean([40.0, 42.0])
    changes = {"base": [0.0, 0.0], "no_fc6_fc7": [1.0, 1.5], "no_conv3_conv4_fc6_fc7": [20.0, 21.0]}
    failed = table3_claims(changes, base, Gate(False, "base seed 0: training top-1 0.400 (needs >= 0.9)"))
    assert [c.verdict for c in failed] == [NOT_COMPARABLE] * 2
    assert failed[0].reason == "undertrained: base seed 0: training top-1 0.400 (needs >= 0.9)"
    assert [c.verdict for c in table3_claims(changes, base, Gate(True, "converged"))] == [REPRODUCED] * 2


# ---------------------------------------------------------------- Fig. 4: feature change after an early epoch


def test_feature_change_is_zero_for_the_same_weights_and_grows_with_a_change():
    from cnnvis.ablations import feature_change
    from cnnvis.models import build_model

    torch.manual_seed(0)
    final = build_model("zfnet", 3, False, None, 64).eval()
    x = torch.rand(5, 3, 64, 64)
    same = feature_change(final, final, x, ["conv1", "conv5"])
    assert all(np.allclose(v[np.isfinite(v)], 0, atol=1e-9) for v in same.values())
    moved = build_model("zfnet", 3, False, None, 64).eval()
    moved.load_state_dict(final.state_dict())
    with torch.no_grad():
        for name, p in moved.named_parameters():
            if name.startswith("features.") and not name.startswith("features.conv1"):
                p.add_(0.5 * p.std() * torch.randn_like(p))  # every layer after conv1 moves
    change = feature_change(moved, final, x, ["conv1", "conv5"])
    assert np.allclose(change["conv1"], 0, atol=1e-9) and (change["conv5"][np.isfinite(change["conv5"])] > 0.01).all()


def test_slopes_are_a_trend_over_every_step():
    from cnnvis.stats import slopes

    assert np.allclose(slopes([[0, 1, 2, 3], [3, 2, 1, 0], [0, 5, 5, 0]]), [1, -1, 0])
    with pytest.raises(ValueError, match="two steps"):
        slopes([[1.0]])


def evolution(per_layer: list, gate=None):
    """The Fig. 4 claim on per-image shares of change left (one list of values over images per layer, conv1 first;
    the whole run's change is 0.5 for every layer and image)."""
    from cnnvis.ablations import evolution_claim

    layers = [f"conv{k}" for k in range(1, len(per_layer) + 1)]
    change = {layer: 0.5 * np.asarray(v) for layer, v in zip(layers, per_layer)}
    return evolution_claim(change, {layer: np.full(len(v), 0.5) for layer, v in change.items()}, layers, 2, 30, gate)


def test_remaining_share_divides_by_each_layer_s_own_change():
    from cnnvis.ablations import remaining_share

    share = remaining_share({"conv1": np.array([0.1, 0.0]), "conv5": np.array([0.4, 0.2])},
                            {"conv1": np.array([0.2, 0.0]), "conv5": np.array([0.8, 0.4])})
    assert np.allclose(share["conv5"], 0.5) and share["conv1"][0] == pytest.approx(0.5) and np.isnan(share["conv1"][1])


def test_evolution_claim_gives_each_answer():
    from cnnvis.claims import CONTRADICTED, INCONCLUSIVE, NOT_COMPARABLE, REPRODUCED, recomputed_verdict
    from cnnvis.gate import Gate

    rng = np.random.default_rng(0)
    noise = lambda: rng.normal(0, 0.01, 40)  # noqa: E731
    rising = evolution([0.01 + noise(), 0.05 + noise(), 0.1 + noise(), 0.2 + noise(), 0.3 + noise()])
    assert rising.verdict == REPRODUCED and rising.n == 40 and recomputed_verdict(rising.evidence, ()) == REPRODUCED
    assert "after epoch 2 of 30: conv1 0.0" in rising.baseline
    assert evolution([0.3 + noise(), 0.2 + noise(), 0.1 + noise()]).verdict == CONTRADICTED  # upper layers settle first
    flat = [0.1 + rng.normal(0, 0.3, 6) for _ in range(3)]
    assert evolution(flat).verdict == INCONCLUSIVE
    gated = evolution([0.01 + noise(), 0.3 + noise()], Gate(False, "training loss fell 40 %"))
    assert gated.verdict == NOT_COMPARABLE and gated.reason == "undertrained: training loss fell 40 %"
