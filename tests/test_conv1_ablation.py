"""ZF Fig. 6 verdicts: per-seed AlexNet-vs-ZF differences with a t interval over seeds, conv1 by training's change."""

import pandas as pd
import pytest

from cnnvis.ablations import CONV1_LABELS, conv1_claims, seed_difference
from cnnvis.claims import claims_frame, recomputed_verdict

A, Z = CONV1_LABELS["alexnet_conv1"], CONV1_LABELS["zfnet"]


def runs(alexnet: dict, zfnet: dict, seeds=(0, 1, 2)) -> pd.DataFrame:
    """One row per arm and seed; each metric is a list over seeds (a number: the same for every seed)."""
    rows = []
    for arm, values in ((A, alexnet), (Z, zfnet)):
        for k, seed in enumerate(seeds):
            rows.append({"arm": arm, "seed": seed,
                         **{m: v[k] if isinstance(v, list) else v for m, v in values.items()}})
    return pd.DataFrame(rows)


BASE = {"dead_conv1_fraction_init": 0.0, "conv1_energy_above_nyquist_init": 0.0, "conv2_grid_score_init": 1.0}


def verdicts(per_run):
    """{claim: verdict} in the table's order, and the table."""
    table = claims_frame(conv1_claims(per_run, n_classes=10))
    keys = ["dead", "nyquist", "grid", "accuracy"]  # the order of the claims
    return dict(zip(keys, table.verdict)), table


def test_every_claim_yes_when_every_seed_agrees():
    found, table = verdicts(agreeing_runs())
    assert set(found.values()) == {"reproduced"}
    assert (table.n == 3).all() and table.rule.str.contains("t over seeds").all()
    assert all(recomputed_verdict(c.evidence, ()) == "reproduced" for c in conv1_claims(agreeing_runs(), 10))


def test_a_stride_gap_already_there_at_initialization_is_not_a_training_effect():
    # AlexNet's trained share is far above ZF's, but only because it started there: training moved both alike
    alexnet = {**BASE, "conv1_energy_above_nyquist_init": [0.934, 0.93, 0.94], "conv1_energy_above_nyquist": [0.90, 0.89, 0.91]}
    zfnet = {**BASE, "conv1_energy_above_nyquist_init": [0.76, 0.75, 0.77], "conv1_energy_above_nyquist": [0.72, 0.715, 0.74]}
    for arm in (alexnet, zfnet):
        arm.update(dead_conv1_fraction=0.0, conv2_grid_score=1.0, test_top1=0.8)
    found, table = verdicts(runs(alexnet, zfnet))
    assert found["nyquist"] == "inconclusive" and table.reason[1].startswith("n < 5")  # changes of mixed sign
    # no filter died in either arm on any seed: three equal differences cannot show the spread is zero
    assert found["dead"] == "inconclusive" and "no spread" in table.reason[0]


def test_opposite_gaps_on_every_seed_contradict():
    alexnet = {**BASE, "dead_conv1_fraction": 0.0, "conv1_energy_above_nyquist": [0.6, 0.62, 0.61],
               "conv2_grid_score": [1.0, 1.05, 1.0], "test_top1": [0.90, 0.91, 0.92]}
    zfnet = {**BASE, "dead_conv1_fraction": [0.2, 0.3, 0.25], "conv1_energy_above_nyquist": 0.8,
             "conv2_grid_score": 1.4, "test_top1": [0.80, 0.80, 0.81]}
    assert set(verdicts(runs(alexnet, zfnet))[0].values()) == {"contradicted"}


def test_a_gap_of_mixed_sign_over_seeds_or_from_two_seeds_is_inconclusive():
    alexnet = {**BASE, "dead_conv1_fraction": 0.0, "conv1_energy_above_nyquist": 0.9, "conv2_grid_score": 1.2,
               "test_top1": [0.80, 0.86, 0.83]}
    zfnet = {**BASE, "dead_conv1_fraction": 0.0, "conv1_energy_above_nyquist": 0.7, "conv2_grid_score": 1.1,
             "test_top1": [0.85, 0.84, 0.84]}
    assert verdicts(runs(alexnet, zfnet))[0]["accuracy"] == "inconclusive"
    # two seeds with a consistent but noisy 2-point gap: t(1 dof) = 12.7 makes the interval cross 0
    two = runs({**alexnet, "test_top1": [0.83, 0.84]}, {**zfnet, "test_top1": [0.87, 0.855]}, seeds=(0, 1))
    est = seed_difference(two, "test_top1", Z, A)
    assert est.n == 2 and est.value == pytest.approx(0.0275) and est.lo < 0
    found, table = verdicts(two)
    assert found["accuracy"] == "inconclusive" and table.reason[3].startswith("n < 5")


def test_seed_difference_pairs_by_seed_and_names_what_to_set():
    per_run = runs({"test_top1": [0.1, 0.5, 0.9]}, {"test_top1": [0.2, 0.6, 1.0]})
    est = seed_difference(per_run.sample(frac=1, random_state=0), "test_top1", Z, A)
    assert est.value == pytest.approx(0.1) and est.hi - est.lo < 1e-9  # the same gap every seed, whatever the order
    with pytest.raises(ValueError, match="experiment.arms"):
        seed_difference(per_run[per_run.arm == A], "test_top1", Z, A)


def agreeing_runs():
    alexnet = {**BASE, "conv1_energy_above_nyquist_init": 0.93, "dead_conv1_fraction": [0.20, 0.25, 0.22],
               "conv1_energy_above_nyquist": [0.95, 0.96, 0.94], "conv2_grid_score": [1.4, 1.5, 1.45],
               "test_top1": [0.80, 0.81, 0.79]}
    zfnet = {**BASE, "conv1_energy_above_nyquist_init": 0.76, "dead_conv1_fraction": [0.0, 0.01, 0.0],
             "conv1_energy_above_nyquist": [0.60, 0.62, 0.61], "conv2_grid_score": [1.0, 1.1, 1.1],
             "test_top1": [0.85, 0.86, 0.85]}
    return runs(alexnet, zfnet)


def test_filters_like_noise_make_the_filter_claims_not_comparable_but_not_the_accuracy_claim():
    from cnnvis.gate import Gate

    table = claims_frame(conv1_claims(agreeing_runs(), 10, Gate(True, "converged"), Gate(False, "AlexNet conv1: 0.05 of filters")))
    assert list(table.verdict) == ["not comparable"] * 3 + ["reproduced"]
    assert (table.reason[:3] == "undertrained: AlexNet conv1: 0.05 of filters").all()


def test_an_unconverged_run_makes_every_claim_not_comparable():
    from cnnvis.gate import Gate

    table = claims_frame(conv1_claims(agreeing_runs(), 10, Gate(False, "zf seed 0: 1 epoch(s)"), Gate(True, "structured")))
    assert (table.verdict == "not comparable").all() and table.reason.str.contains("undertrained: zf seed 0").all()
    passed = claims_frame(conv1_claims(agreeing_runs(), 10, Gate(True, "converged"), Gate(True, "structured")))
    assert (passed.verdict == "reproduced").all()
