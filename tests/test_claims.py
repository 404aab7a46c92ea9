"""The four answers, the random-weights control and the committed evidence (cnnvis.claims)."""

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from cnnvis.claims import (COLUMNS, CONTRADICTED, INCONCLUSIVE, NOT_COMPARABLE, REPRODUCED, UNINFORMATIVE, Claim,
                           Equivalence, Evidence, Threshold, all_of, claim_seed, claims_frame, decided, detectable,
                           read_evidence, recomputed_verdict, with_control, write_evidence)
from cnnvis.stats import MIN_RANGE_N, Estimate


@pytest.mark.parametrize("est, answer", [
    (Estimate(0.5, 0.2, 0.8, 30), REPRODUCED),      # wholly above the bar
    (Estimate(-0.5, -0.8, -0.2, 30), CONTRADICTED),  # wholly below: the opposite effect
    (Estimate(0.0, -0.1, 0.0, 30), CONTRADICTED),    # touches the bar from below: the effect is excluded
    (Estimate(0.1, -0.2, 0.4, 30), INCONCLUSIVE),    # straddles
    (Estimate(0.9, float("nan"), float("nan"), 1), INCONCLUSIVE),  # no interval: one run decides nothing
])
def test_threshold_gives_each_answer(est, answer):
    assert Threshold(0.0).decide(est).verdict == answer


def test_threshold_below_mirrors_above():
    rule = Threshold(0.1, above=False)
    assert rule.decide(Estimate(0.05, 0.0, 0.09, 20)).verdict == REPRODUCED
    assert rule.decide(Estimate(0.3, 0.2, 0.4, 20)).verdict == CONTRADICTED
    assert rule.decide(Estimate(0.1, 0.0, 0.2, 20)).verdict == INCONCLUSIVE


def test_inconclusive_says_what_it_could_have_detected_and_that_n_is_small():
    est = Estimate(-2.7, -28.1, 22.7, 2)  # the Table 3 row that read "not reproduced"
    decision = Threshold(0.0, min_n=5).decide(est)
    assert decision.verdict == INCONCLUSIVE and decision.reason.startswith("n < 5")
    assert f"{detectable(est):.3g}" in decision.reason
    # 2.8 standard errors: a 95 % half-width of 1.96 SE gives 2.8 / 1.96 of it
    assert detectable(Estimate(0, -1.96, 1.96, 100)) == pytest.approx(2.8)


@pytest.mark.parametrize("est, answer", [
    (Estimate(0.01, -0.03, 0.04, 50), REPRODUCED),
    (Estimate(0.2, 0.1, 0.3, 50), CONTRADICTED),
    (Estimate(0.04, -0.01, 0.09, 50), INCONCLUSIVE),
])
def test_equivalence_gives_each_answer(est, answer):
    assert Equivalence(0.05).decide(est).verdict == answer


@pytest.mark.parametrize("rule", [Threshold(0.0), Equivalence(2.0)])
def test_a_zero_width_interval_decides_only_from_enough_values(rule):
    # all n values equal: below the floor no interval vouches for zero spread; from it the range [v, v] does
    assert rule.decide(Estimate(1.0, 1.0, 1.0, MIN_RANGE_N - 1)).verdict == INCONCLUSIVE
    assert "no spread" in rule.decide(Estimate(1.0, 1.0, 1.0, 2)).reason
    assert rule.decide(Estimate(1.0, 1.0, 1.0, MIN_RANGE_N)).verdict == REPRODUCED
    assert rule.decide(Estimate(1.0, 0.9, 1.1, 2)).verdict == REPRODUCED  # a spread decides at any n >= 2


@pytest.mark.parametrize("statistic", ["t_mean", "bootstrap_mean"])
def test_equal_values_decide_from_the_floor_on(statistic):
    below, at = ([0.1] * n for n in (MIN_RANGE_N - 1, MIN_RANGE_N))
    assert Evidence(statistic, (below,), Threshold(0.0)).decide().verdict == INCONCLUSIVE
    assert Evidence(statistic, (at,), Threshold(0.0)).decide().verdict == REPRODUCED


def test_two_values_get_the_t_interval_not_their_own_range():
    # a percentile bootstrap of [0.2, 1.0] is about [0.2, 1.0] (covers the mean half the time); t with 1 df is wide
    assert Evidence("bootstrap_mean", ([0.2, 1.0],), Threshold(0.0)).decide().verdict == INCONCLUSIVE
    assert Evidence("paired_difference", ([1.2, 2.0], [1.0, 1.0]), Threshold(0.0)).decide().verdict == INCONCLUSIVE


def test_all_of_takes_the_weakest_answer():
    yes, no, maybe = (Threshold(0).decide(Estimate(v, v - .1, v + .1, 9)) for v in (1, -1, 0))
    assert all_of([yes, yes]).verdict == REPRODUCED
    assert all_of([yes, maybe]).verdict == INCONCLUSIVE
    assert all_of([yes, maybe, no]).verdict == CONTRADICTED


def claim(verdict, ours="x (n = 9)"):
    return Claim("P", "Fig. 1", "it holds", "qualitative", ours, 9, "-", "rule", verdict)


def test_a_claim_the_random_control_also_passes_is_uninformative():
    trained = [claim(REPRODUCED), claim(INCONCLUSIVE)]
    control = [claim(REPRODUCED, "0.02 [0.01, 0.03] (n = 9)")]
    out = with_control(trained[:1], control)
    assert out[0].verdict == UNINFORMATIVE and out[0].control.startswith("0.02 [0.01, 0.03]")
    assert with_control(trained[1:], control)[0].verdict == INCONCLUSIVE  # only a reproduced claim can be exposed
    passed = with_control(trained[:1], [claim(CONTRADICTED, "-0.1 (n = 9)")])[0]
    assert passed.verdict == REPRODUCED and "contradicted" in passed.control
    assert with_control(trained[:1], None, "not run: trained from scratch")[0].control == "not run: trained from scratch"


def test_claims_frame_has_the_fixed_columns_and_the_reason():
    frame = claims_frame([claim(REPRODUCED)])
    assert list(frame.columns) == COLUMNS and frame["random-weights control"][0] == "not run"


def test_unknown_verdicts_and_statistics_are_refused():
    with pytest.raises(ValueError, match="verdict"):
        claim("probably")
    with pytest.raises(ValueError, match="statistic"):
        Evidence("median", ([1.0],), Threshold())


def test_claim_seeds_differ_between_claims_and_repeat_for_one():
    assert claim_seed("Fig. 7", "a") == claim_seed("Fig. 7", "a") != claim_seed("Fig. 7", "b")


def test_evidence_round_trips_and_recomputes_the_verdict(tmp_path):
    rng = np.random.default_rng(0)
    a, b = rng.normal(1, 1, 40), rng.normal(0, 1, 40)
    trained = decided("P", "Fig. 1", "a beats b", "qualitative", "ours (n = 40)", 40, "-", "rule",
                      [Evidence("paired_difference", (a, b), Threshold(0.0), seed=claim_seed("a beats b"))])
    control = decided("P", "Fig. 1", "a beats b", "qualitative", "ctl (n = 40)", 40, "-", "rule",
                      [Evidence("bootstrap_mean", (rng.normal(0, 1, 40),), Threshold(0.0))])
    both = with_control([trained], [control])[0]
    path = write_evidence(tmp_path / "claims_evidence.npz", [both])
    [entry] = read_evidence(path)
    assert entry["verdict"] == both.verdict == REPRODUCED
    assert recomputed_verdict(entry["evidence"], entry["control_evidence"]) == REPRODUCED
    # the same evidence for the control makes it uninformative, on recomputation too
    twin = with_control([trained], [trained])[0]
    [entry] = read_evidence(write_evidence(tmp_path / "twin.npz", [twin]))
    assert entry["verdict"] == UNINFORMATIVE == recomputed_verdict(entry["evidence"], entry["control_evidence"])


def test_proportion_and_t_evidence():
    share = Evidence("proportion", ([1] * 18 + [0] * 2,), Threshold(0.5))
    assert share.estimate().value == pytest.approx(0.9) and share.decide().verdict == REPRODUCED
    seeds = Evidence("t_mean", ([1.0, 1.2],), Threshold(0.0, min_n=5))
    assert seeds.decide().verdict == INCONCLUSIVE  # 2 seeds: t with 1 df straddles 0


def test_not_comparable_claims_recompute_nothing():
    assert recomputed_verdict((), ()) is None
    frame = claims_frame([claim(NOT_COMPARABLE)])
    assert isinstance(frame, pd.DataFrame) and frame.verdict[0] == NOT_COMPARABLE


@pytest.mark.parametrize("lo", [-1e-11, 0.0, 6e-11])
def test_an_interval_end_within_rounding_of_the_bar_touches_it(lo):
    # cam_gap's stage7 localization claim: the run's lower end was -1e-11, its stored values recompute to +6e-11
    assert Threshold(0.0).decide(Estimate(0.9, lo, 1.8, 970)).verdict == INCONCLUSIVE
    assert Threshold(0.0).decide(Estimate(0.9, 1e-6, 1.8, 970)).verdict == REPRODUCED
    assert Threshold(5.0, above=False).decide(Estimate(3.0, 1.0, 5.0 - 1e-10, 30)).verdict == INCONCLUSIVE
    assert Equivalence(1.0).decide(Estimate(0.0, -0.5, 1.0 - 1e-10, 30)).verdict == INCONCLUSIVE


def test_an_undertrained_control_that_passes_the_rule_still_exposes_the_claim():
    # cam_gap: a random trunk's heads fail the gate, yet GAP "costs little" there too (both near chance)
    little = Threshold(5.0, above=False)
    trained = decided("P", "T1", "GAP costs little", "+2.2", "1.5 (n = 3)", 3, "-", "rule",
                      [Evidence("t_mean", ([0.5, 1.5, 2.5],), little)])
    control = decided("P", "T1", "GAP costs little", "+2.2", "-5.0 (n = 3)", 3, "-", "rule",
                      [Evidence("t_mean", ([-6.0, -5.0, -4.0],), little)])
    undertrained = replace(control, verdict=NOT_COMPARABLE, reason="undertrained: chance accuracy")
    [out] = with_control([trained], [undertrained])
    assert out.verdict == UNINFORMATIVE and out.control.endswith("(reproduced)")
    assert recomputed_verdict(out.evidence, out.control_evidence) == UNINFORMATIVE
    failing = replace(undertrained, evidence=(Evidence("t_mean", ([6.0, 7.0, 8.0],), little),))
    assert with_control([trained], [failing])[0].verdict == REPRODUCED
