"""The intervals that decide verdicts: coverage on known distributions, and the n = 1 case."""

import numpy as np
import pytest

from cnnvis.stats import LEVEL, MIN_RANGE_N, bootstrap_mean, paired_difference, proportion, t_mean


def test_bootstrap_interval_covers_the_true_mean_about_95_percent_of_the_time():
    rng = np.random.default_rng(0)
    covered = 0
    for k in range(200):
        est = bootstrap_mean(rng.exponential(1.0, 60), seed=k, n_boot=2000)
        covered += est.lo < 1.0 < est.hi
    assert 0.88 <= covered / 200 <= 0.99


def test_the_range_floor_is_the_fewest_values_whose_range_covers_the_median_at_the_level():
    # P(min < median < max) over n draws of a continuous variable: 1 - 2 ** (1 - n)
    assert 1 - 2.0 ** (2 - MIN_RANGE_N) < LEVEL <= 1 - 2.0 ** (1 - MIN_RANGE_N) and MIN_RANGE_N == 6


def test_bootstrap_below_the_floor_is_the_t_interval_and_percentile_from_it():
    few = [0.83, 0.84, 0.88, 0.9, 0.95]
    assert len(few) == MIN_RANGE_N - 1 and bootstrap_mean(few, seed=3) == t_mean(few)
    enough = [*few, 0.86]
    est = bootstrap_mean(enough, seed=3)
    assert est != t_mean(enough) and min(enough) <= est.lo < est.hi <= max(enough)


def test_wilson_interval_matches_the_textbook_value():
    est = proportion(8, 10)  # Wilson 95 %: [0.490, 0.943]
    assert est.value == 0.8 and est.lo == pytest.approx(0.4902, abs=1e-3) and est.hi == pytest.approx(0.9433, abs=1e-3)
    assert proportion([True] * 8 + [False] * 2) == est


def test_t_interval_matches_scipy():
    from scipy import stats

    values = [0.83, 0.84, 0.88]
    lo, hi = stats.t.interval(0.95, 2, loc=np.mean(values), scale=stats.sem(values))
    est = t_mean(values)
    assert est.lo == pytest.approx(lo) and est.hi == pytest.approx(hi) and est.n == 3


def test_one_run_has_no_interval_and_decides_nothing():
    est = t_mean([0.9])
    assert str(est) == "0.900 (n = 1)" and "±" not in str(est)
    assert not est.above(0.0) and not est.below(1.0)


def test_paired_difference_says_no_when_there_is_no_effect():
    rng = np.random.default_rng(1)
    a = rng.normal(0, 1, 500)
    null = paired_difference(a, a + rng.normal(0, 0.1, 500))
    effect = paired_difference(a + 0.2, a + rng.normal(0, 0.1, 500))
    assert not null.above(0.0) and not null.below(0.0)
    assert effect.above(0.0)


def test_a_claim_takes_only_the_verdict_words():
    from cnnvis.claims import INCONCLUSIVE, Claim, claims_frame

    row = dict(paper="P", source="Fig. 1", claim="c", paper_number="qualitative", ours="0.5 (n = 1)", n=1,
               baseline="-", rule="r")
    assert list(claims_frame([Claim(**row, verdict=INCONCLUSIVE)]).verdict) == ["inconclusive"]
    for word in ("yes", "not reproduced"):  # the two-answer rule's "no" is gone: contradicted or inconclusive
        with pytest.raises(ValueError, match="verdict"):
            Claim(**row, verdict=word)
