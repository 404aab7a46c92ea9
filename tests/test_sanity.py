"""Sanity checks (cnnvis.sanity, cnnvis.sanity_claims): measures against scipy / by construction, the cascade's order
and extent on a hand-built net, the other-class pairing, the rule's three answers on constructed similarity curves
(and its fragility table), the gates, a method that ignores the weights and one that reads them, and a smoke run."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.stats import spearmanr
from torch import nn

from cnnvis.cams import InputGradient, Saliency
from cnnvis.claims import CONTRADICTED, INCONCLUSIVE, NOT_COMPARABLE, REPRODUCED, claims_frame
from cnnvis.gate import Gate
from cnnvis.sanity import (EDGE, MEASURES, Cascade, cascade_blocks, cascading_randomization, constant_share, edge_map,
                           other_class_partners, other_class_similarity, similarities, spearman)
from cnnvis.sanity_claims import (INSENSITIVE, MARGIN, SENSITIVE, UNDECIDED, cascade_claims, data_randomization_table,
                                  decide_finding, first_step_below, flips, fragility, fragility_table,
                                  memorization_gate, paired, sensitivity, top_layer_steps)
from cnnvis.scoreboard import row_problems
from cnnvis.stats import Estimate
from cnnvis.training import ShuffledLabels
from tests.conftest import needs_caltech101, needs_imagenet_val, run_py


class TinyNet(nn.Module):
    """conv1 -> relu1 -> bn -> conv2 -> relu2 -> pool -> fc, named like the harness's models: 'conv1' is relu1's
    output (so the block must find features.conv1 before it), 'conv2' owns the BatchNorm and conv2."""

    def __init__(self, classes: int = 3):
        super().__init__()
        self.features = nn.Sequential()
        self.features.add_module("conv1", nn.Conv2d(3, 4, 3, padding=1))
        self.features.add_module("relu1", nn.ReLU())
        self.features.add_module("bn", nn.BatchNorm2d(4))
        self.features.add_module("conv2", nn.Conv2d(4, 6, 3, padding=1))
        self.features.add_module("relu2", nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(4)
        self.fc = nn.Linear(6 * 16, classes)
        self.layers = {"conv1": "features.relu1", "conv2": "features.relu2", "pool": "pool", "fc": "fc"}

    def forward(self, x):
        return self.fc(self.pool(self.features(x)).flatten(1))


def smooth_noise(seed: int, n: int = 1, size: int = 32) -> np.ndarray:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, size // 4, size // 4, generator=g)
    return nn.functional.interpolate(x, size=size, mode="bilinear", align_corners=False)[:, 0].numpy()


def test_spearman_matches_scipy_with_ties():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 5, (16, 16)).astype(float)  # many ties
    b = a + rng.normal(0, 2, a.shape)
    assert spearman(a, b) == pytest.approx(spearmanr(a.ravel(), b.ravel()).statistic, abs=1e-12)
    assert spearman(np.zeros((4, 4)), a[:4, :4]) == 0.0  # a constant map shares no ordering


def test_identical_maps_are_similar_one_and_unrelated_maps_about_zero():
    maps = torch.from_numpy(smooth_noise(1, 24, 64))
    same = similarities(maps, maps.clone())
    for measure, values in same.items():
        assert np.allclose(values, 1.0), measure
    other = similarities(maps, torch.from_numpy(smooth_noise(2, 24, 64)))
    for measure in ("spearman_abs", "spearman_signed", "hog"):
        assert abs(other[measure].mean()) < 0.1, (measure, other[measure].mean())
    assert other["ssim"].mean() < 0.3  # SSIM's luminance term keeps two [0, 1] maps above 0


def test_constant_share_counts_flat_maps():
    maps = torch.rand(4, 3, 8, 8)
    maps[1] = 0
    maps[3] = 2.0
    assert constant_share(maps) == 0.5


def test_input_space_signals_reduce_by_absolute_and_signed_channel_sums():
    signal = torch.randn(2, 3, 32, 32)
    flipped = signal.clone()
    flipped[:, 0] *= -1  # same |.|, different signed sum
    s = similarities(signal, flipped)
    assert np.allclose(s["spearman_abs"], 1.0) and (s["spearman_signed"] < 0.9).all()


def test_blocks_follow_the_named_layers_and_the_cascade_goes_top_down_cumulatively():
    torch.manual_seed(0)
    net = TinyNet().eval()
    net.features.bn.running_mean.fill_(0.3)
    assert cascade_blocks(net) == {"conv1": ["features.conv1"], "conv2": ["features.bn", "features.conv2"],
                                   "fc": ["fc"]}
    steps = cascading_randomization(net, seed=0)
    assert [name for name, _ in steps] == ["fc", "conv2", "conv1"]
    modules = {"fc": ["fc"], "conv2": ["features.bn", "features.conv2"], "conv1": ["features.conv1"]}

    def changed(model, path):
        return any(not torch.equal(p, q) for p, q in zip(model.get_submodule(path).state_dict().values(),
                                                          net.get_submodule(path).state_dict().values()))

    randomized = []
    for name, model in steps:
        randomized += modules[name]
        for path in ["fc", "features.bn", "features.conv2", "features.conv1"]:
            assert changed(model, path) == (path in randomized), (name, path)
    bn = steps[-1][1].features.bn
    assert torch.equal(bn.running_mean, torch.zeros(4)) and torch.equal(bn.weight, torch.ones(4))
    assert torch.equal(net.features.bn.running_mean, torch.full((4,), 0.3))  # the original is untouched


def test_the_cascade_is_seeded():
    net = TinyNet()
    a, b = cascading_randomization(net, seed=3), cascading_randomization(net, seed=3)
    assert torch.equal(a[-1][1].features.conv1.weight, b[-1][1].features.conv1.weight)


def test_a_step_reads_the_interval_of_s_minus_o_against_the_margin():
    assert sensitivity(Estimate(0.02, -0.01, 0.05, 30)) == SENSITIVE  # below the margin: no closer than another class
    assert sensitivity(Estimate(0.5, 0.4, 0.6, 30)) == INSENSITIVE
    assert sensitivity(Estimate(MARGIN, 0.05, 0.15, 30)) == UNDECIDED  # includes the margin
    assert sensitivity(Estimate(0.5, float("nan"), float("nan"), 1)) == UNDECIDED  # n = 1: no interval
    assert sensitivity(None) == UNDECIDED  # no image of another class to pair with


def test_other_class_pairs_never_share_a_class_and_are_seeded():
    labels = np.array([0, 0, 0, 0, 1, 1, 2, 3, 3, 3])
    partners = other_class_partners(labels, seed=3)
    assert (partners >= 0).all() and (labels[partners] != labels).all()
    np.testing.assert_array_equal(partners, other_class_partners(labels, seed=3))
    assert (other_class_partners(np.array([5, 5, 5]), seed=0) == -1).all()  # one class: no partner
    maps = torch.from_numpy(smooth_noise(0, 3, 32))
    other = other_class_similarity(maps, np.array([1, 0, -1]))
    assert np.isfinite(other["spearman_abs"][:2]).all() and np.isnan(other["spearman_abs"][2])
    assert other["spearman_abs"][0] == pytest.approx(spearman(maps[0].numpy(), maps[1].numpy()))


STEPS = ["trained", "fc", "mid", "low", "bottom"]  # 4 randomized steps: the top-layer steps are fc and mid


def curve(levels, n=40, seed=0, noise=0.02) -> list[np.ndarray]:
    """Per step, n per-image similarities at ``levels[k]`` (step 0, the trained model: exactly 1)."""
    rng = np.random.default_rng(seed)
    return [np.ones(n)] + [level + rng.normal(0, noise, n) for level in levels]


O_LEVEL = 0.3  # what a trained map shares with another class's map


def test_the_top_layer_steps_are_the_logits_through_the_first_half():
    assert top_layer_steps(4) == [1, 2] and top_layer_steps(10) == [1, 2, 3, 4, 5] and top_layer_steps(3) == [1, 2]
    assert top_layer_steps(10, "the logits only") == [1] and top_layer_steps(3, "all steps") == [1, 2, 3]


@pytest.mark.parametrize("finding, levels, answer", [
    # guided backprop's curve stays high through the top-layer steps, then falls: the paper's pattern
    (INSENSITIVE, [0.95, 0.9, 0.4, 0.3], REPRODUCED),
    (SENSITIVE, [0.6, O_LEVEL + 0.02, 0.3, 0.3], REPRODUCED),  # at the other-class level by the last top-layer step
    (INSENSITIVE, [0.9, O_LEVEL, 0.3, 0.3], CONTRADICTED),  # falls to the other-class level within the top layers
    (SENSITIVE, [0.9, 0.85, 0.5, 0.3], CONTRADICTED),  # still far above it after the top layers
    (SENSITIVE, [0.6, O_LEVEL + MARGIN, 0.3, 0.3], INCONCLUSIVE),  # the interval straddles the margin
    (INSENSITIVE, [0.9, O_LEVEL + MARGIN, 0.3, 0.3], INCONCLUSIVE),
])
def test_the_rule_gives_each_answer_on_constructed_curves(finding, levels, answer):
    o = np.full(40, O_LEVEL)
    assert decide_finding(curve(levels), o, finding, STEPS).verdict == answer
    # the fully randomized steps (low, bottom) do not enter: the claim is about the top layers
    assert decide_finding(curve(levels[:2] + [0.95, 0.95]), o, finding, STEPS).verdict == answer


def test_without_an_image_of_another_class_the_rule_is_inconclusive():
    decision = decide_finding(curve([0.9, 0.9, 0.9, 0.9]), np.full(40, np.nan), INSENSITIVE, STEPS)
    assert decision.verdict == INCONCLUSIVE and "another class" in decision.reason


def test_the_first_step_below_the_bar_on_a_hand_made_curve():
    o = np.full(40, O_LEVEL)
    assert first_step_below(curve([0.9, 0.7, O_LEVEL + 0.05, O_LEVEL]), o, STEPS) == "low"
    assert first_step_below(curve([0.9, 0.7, O_LEVEL + MARGIN, 0.8]), o, STEPS) == "none"  # straddles, never below
    assert first_step_below(curve([O_LEVEL, 0.9, 0.9, 0.9]), o, STEPS) == "fc"


def cascade_of(levels: dict[str, list[float]]) -> Cascade:
    """A cascade whose every measure follows ``levels`` per method, against another class's level ``O_LEVEL``."""
    sims, others = {}, {}
    for method, lv in levels.items():
        sims[method] = [{m: values for m in MEASURES} for values in curve(lv)]
        others[method] = {m: np.full(40, O_LEVEL) for m in MEASURES}
    return Cascade(STEPS, sims, {}, {m: 0.0 for m in levels}, others, {m: 0.0 for m in levels})


def test_fragility_flags_a_verdict_that_one_setting_flips():
    # saliency stays 0.15 above another class's level from the end of the top layers on: insensitive at the margin
    # 0.1 (contradicted), sensitive at the margin 0.2 (reproduced)
    run = cascade_of({"saliency": [0.8] + [O_LEVEL + 0.15] * 3, "guided_backprop": [0.95, 0.9, 0.4, 0.3],
                      EDGE: [1.0, 1.0, 1.0, 1.0]})
    verdicts = fragility(run.sims["saliency"], run.other["saliency"], SENSITIVE, STEPS)
    assert verdicts["default"] == CONTRADICTED and flips(verdicts) == {"margin 0.2": REPRODUCED}
    table = fragility_table({"tiny": run}).set_index("method")
    assert table.loc["saliency", "fragile"] == "yes" and table.loc["saliency", "margin 0.2"] == REPRODUCED
    assert table.loc["guided_backprop", "fragile"] == "yes"  # "all steps" reads the fully randomized steps too
    assert table.loc["guided_backprop", "steps: all steps"] == CONTRADICTED
    claims = {c.claim.split(" is ")[0]: c for c in cascade_claims(run, "tiny")}
    assert claims["saliency"].verdict == CONTRADICTED and "fragile: margin 0.2 -> reproduced" in claims["saliency"].ours


def test_claims_follow_the_rule_and_a_failed_gate_makes_them_not_comparable():
    run = cascade_of({"saliency": [0.5, O_LEVEL, 0.3, 0.3], "gradcam": [0.9, 0.9, 0.9, 0.9],
                      "guided_backprop": [0.95, 0.9, 0.4, 0.3], "guided_gradcam": [0.9, O_LEVEL + MARGIN, 0.3, 0.3],
                      EDGE: [1.0, 1.0, 1.0, 1.0]})
    verdicts = {c.claim.split(" is ")[0]: c.verdict for c in cascade_claims(run, "tiny")}
    assert verdicts == {"saliency": REPRODUCED, "gradcam": CONTRADICTED, "guided_backprop": REPRODUCED,
                        "guided_gradcam": INCONCLUSIVE}
    gated = cascade_claims(run, "tiny", Gate(False, "training top-1 0.500 (needs >= 0.9)"))
    assert all(c.verdict == NOT_COMPARABLE and c.reason == "undertrained: training top-1 0.500 (needs >= 0.9)"
               for c in gated)
    assert all(c.evidence for c in gated)  # the values stay beside the verdict
    rows = claims_frame(cascade_claims(run, "tiny"))  # each row prints its n, as the scoreboard requires
    assert all(row_problems(row) == [] for _, row in rows.iterrows())


def test_data_randomization_needs_a_model_that_fits_its_permuted_labels():
    s = {"saliency": {m: np.full(40, 0.3) + np.random.default_rng(0).normal(0, 0.02, 40) for m in MEASURES}}
    other = {"saliency": {m: np.full(40, O_LEVEL) for m in MEASURES}}
    fitted = data_randomization_table(s, other, {"saliency": 0.0}, memorization_gate(0.98, 0.9))
    assert fitted.loc[0, "verdict"] == SENSITIVE
    verdict = data_randomization_table(s, other, {"saliency": 0.0}, memorization_gate(0.11, 0.9)).loc[0, "verdict"]
    assert verdict.startswith("not comparable (undertrained:") and "0.110" in verdict and ">= 0.9" in verdict


def cascade_margin(method, net, x, labels):
    """mean(s - o) of ``method``'s maps, trained vs fully randomized net, o from images of another class."""
    original = method(net, x)
    randomized = method(cascading_randomization(net, seed=1)[-1][1], x)
    s = similarities(original, randomized)["spearman_abs"]
    return paired(s, other_class_similarity(original, other_class_partners(labels))["spearman_abs"])


def saliency(net, x):
    with Saliency(net) as s:
        return s.attribute(x, torch.zeros(len(x), dtype=torch.long))


def test_an_edge_detector_is_insensitive_and_gradient_saliency_is_sensitive():
    torch.manual_seed(0)
    net = TinyNet().eval()
    x, labels = torch.rand(24, 3, 32, 32), np.arange(24) % 3
    assert sensitivity(cascade_margin(lambda model, images: edge_map(images), net, x, labels)) == INSENSITIVE
    margin = cascade_margin(saliency, net, x, labels)
    assert sensitivity(margin) == SENSITIVE, margin


def test_shuffled_labels_permute_the_labels_and_keep_the_images():
    data = [(torch.full((1,), float(i)), i % 3) for i in range(30)]
    labels = [y for _, y in data]
    shuffled = ShuffledLabels(data, labels, seed=0)
    assert sorted(shuffled.labels) == sorted(labels) and list(shuffled.labels) != labels
    assert [float(shuffled[i][0]) for i in range(30)] == list(range(30))
    assert list(ShuffledLabels(data, labels, seed=0).labels) == list(shuffled.labels)


@pytest.mark.real_data
@needs_caltech101
@needs_imagenet_val
def test_smoke_run_writes_the_figures_and_tables(tmp_path):
    result = run_py("experiment=sanity_checks", "smoke=true", f"results_dir={tmp_path}",
                    f"experiment.checkpoint_root={tmp_path / 'checkpoints'}")
    assert result.returncode == 0, result.stderr[-3000:]
    out = tmp_path / "sanity_checks"
    for name in ("imagenet_cascade", "imagenet_similarity", "caltech101_cascade", "caltech101_similarity"):
        assert (out / f"{name}.png").is_file(), name
    for name in ("imagenet_cascade", "caltech101_cascade", "data_randomization", "claims", "fragility"):
        assert (out / f"{name}.csv").is_file(), name
    assert (out / "claims_evidence.npz").is_file()
    claims = pd.read_csv(out / "claims.csv")
    assert claims.claim.str.startswith("saliency is sensitive").any()
    assert claims.claim.str.startswith("guided_backprop is insensitive").any()
    # the smoke ZFNet (2 epochs) fails the trained-enough gate: its claims are not comparable, the ImageNet ones are
    zfnet = claims.claim.str.endswith("[caltech101]")
    assert (claims.verdict[zfnet] == NOT_COMPARABLE).all() and claims.reason[zfnet].str.startswith("undertrained:").all()
    assert (claims.verdict[~zfnet] != NOT_COMPARABLE).all()
    run = json.loads((out / "run.json").read_text())
    assert run["smoke"] is True and run["metrics"]["caltech101/trained_enough"] == 0


def test_cascade_similarity_matches_quantus_mprt():
    """Quantus's MPRT (top-down, Spearman of |gradient| summed over channels) against ours on the same
    randomized models (Quantus's generator: it re-seeds every layer, we seed each step): same layer order,
    same per-image similarities."""
    quantus = pytest.importorskip("quantus")
    from quantus.helpers.model.pytorch_model import PyTorchModel

    torch.manual_seed(0)
    net = TinyNet().eval()
    x, y = torch.rand(6, 3, 32, 32), np.zeros(6, dtype=int)

    def gradient(model, inputs, targets):
        with InputGradient(model) as g:
            return g.attribute(torch.as_tensor(inputs).float(), torch.as_tensor(targets))

    def explain(model, inputs, targets, **kwargs):  # Quantus gets the 2-D map; ours reduces the raw gradient
        return gradient(model, inputs, targets).abs().sum(1, keepdim=True).numpy()

    metric = quantus.MPRT(similarity_func=quantus.similarity_func.correlation_spearman, layer_order="top_down",
                          seed=42, abs=True, normalise=False, disable_warnings=True)
    theirs = metric(model=net, x_batch=x.numpy(), y_batch=y, a_batch=None, explain_func=explain, device="cpu")
    single_modules = {path: [path] for path in ("features.conv1", "features.bn", "features.conv2", "fc")}
    ours_order = [name for name, _ in cascading_randomization(net, single_modules)]
    assert ours_order == [k for k in theirs if k != "original"]
    original = gradient(net, x, y)
    generator = PyTorchModel(net, channel_first=True).get_random_layer_generator("top_down", seed=42)
    for name, randomized in generator:
        ours = similarities(original, gradient(randomized, x, y))["spearman_abs"]
        np.testing.assert_allclose(ours, theirs[name], atol=1e-9, err_msg=name)


def test_the_cascade_procedure_maps_each_method_at_every_step_and_names_what_refuses_the_network():
    from cnnvis.sanity import cascade, permuted_label_maps, trained_maps
    from cnnvis.sanity_claims import cascade_table

    torch.manual_seed(0)
    net = TinyNet().eval()
    x, labels = torch.rand(6, 3, 32, 32), np.arange(6) % 3
    targets = net(x).argmax(1)
    options = dict(layer="conv2", layercam_layers=["conv1", "conv2"], batch_size=4, scorecam_batch_size=2)
    trained, skipped = trained_maps(["saliency", "gradcam", "cam", "scorecam"], net, x, targets, options,
                                    scorecam_images=0)
    assert set(trained) == {"saliency", "gradcam", EDGE} and set(skipped) == {"cam"}  # TinyNet has no GAP head
    run = cascade(net, x, targets, labels, trained, options, seed=0)
    assert run.steps == ["trained", "fc", "conv2", "conv1"]  # pool has no parameters: no step of its own
    assert all(len(run.sims[m]) == len(run.steps) == len(run.shown[m]) for m in trained)
    np.testing.assert_allclose(run.sims[EDGE][-1]["spearman_abs"], 1.0)  # the edge map never reads the weights
    table = cascade_table(run).set_index("method")
    assert table.loc[EDGE, "last top-layer step"] == INSENSITIVE
    assert table.loc["saliency", "paper (Adebayo 2018)"] == SENSITIVE
    other = cascading_randomization(net, seed=1)[-1][1]
    sims, others, constant = permuted_label_maps(trained, other, x, targets, labels, options, seed=0)
    permuted = data_randomization_table(sims, others, constant, memorization_gate(0.2, 0.9))
    assert list(permuted["method"]) == list(trained)
    assert permuted["verdict"].str.startswith("not comparable (undertrained").all()  # 20 % of its labels fitted
