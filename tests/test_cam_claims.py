"""The decision rules of cnnvis.localization (as experiments/cam_methods.py runs them) on constructed per-image scores: each rule says "no"
where the answer must be no, "yes" where it must be yes, and pairs only the images both methods were scored on."""

import numpy as np

from cnnvis.claims import COLUMNS, NOT_REPRODUCED, REPRODUCED, claims_frame
from cnnvis.localization import (CENTRE_BOX, CENTRE_POINT, FULL_IMAGE, faithfulness_claims, higher_than_all,
                                 localization_claims, lower_than_all, metrics_table)

N = 64


def faithfulness_scores(gradcam_pp_shift: float, scorecam_shift: float, scorecam_images: int = N) -> dict:
    rng = np.random.default_rng(0)
    drop = rng.uniform(10, 60, N)
    ic = (rng.random(N) < 0.3).astype(float)

    def method(shift, n=N):
        noisy = np.clip(drop + shift + rng.normal(0, 3, N), 0, 100)
        return {"average_drop": np.where(np.arange(N) < n, noisy, np.nan),
                "increase_in_confidence": np.where(np.arange(N) < n, ic, np.nan)}

    return {"gradcam": method(0.0), "gradcam++": method(gradcam_pp_shift),
            "scorecam": method(scorecam_shift, scorecam_images), CENTRE_POINT: method(20.0)}


def test_lower_rule_says_no_on_a_tie_and_yes_on_a_clear_drop():
    tie = faithfulness_scores(0.0, 0.0)
    holds, (diff,) = lower_than_all(tie, "average_drop", "gradcam++", ["gradcam"])
    assert not holds and diff.lo < 0 < diff.hi and diff.n == N
    holds, _ = lower_than_all(faithfulness_scores(-10.0, 0.0), "average_drop", "gradcam++", ["gradcam"])
    assert holds
    # higher is the mirror rule: a clear drop is not an increase
    assert not higher_than_all(faithfulness_scores(-10.0, 0.0), "average_drop", "gradcam++", ["gradcam"])[0]


def test_lowest_needs_every_comparison():
    # Score-CAM 10 below Grad-CAM but level with Grad-CAM++ (which is itself 10 below): not the lowest
    scores = faithfulness_scores(-10.0, -10.0)
    holds, diffs = lower_than_all(scores, "average_drop", "scorecam", ["gradcam", "gradcam++"])
    assert not holds and diffs[0].below(0) and not diffs[1].below(0)
    assert lower_than_all(faithfulness_scores(-10.0, -25.0), "average_drop", "scorecam", ["gradcam", "gradcam++"])[0]


def test_pairs_only_the_images_both_methods_were_scored_on():
    scores = faithfulness_scores(0.0, -25.0, scorecam_images=16)
    _, diffs = lower_than_all(scores, "average_drop", "scorecam", ["gradcam"])
    assert diffs[0].n == 16


def test_faithfulness_claims_compute_their_verdicts():
    rows = faithfulness_claims(faithfulness_scores(0.0, -25.0), "imagenet", {})
    frame = claims_frame(rows)
    assert list(frame.columns) == COLUMNS
    verdicts = dict(zip(frame["claim"], frame["verdict"]))
    assert verdicts["gradcam++ has a lower Average Drop than gradcam [imagenet]"] == NOT_REPRODUCED
    assert verdicts["scorecam has a lower Average Drop than gradcam and gradcam++ [imagenet]"] == REPRODUCED
    # identical indicators: the paired difference is 0 everywhere, so no interval lies above 0
    assert verdicts["scorecam has a higher Increase in Confidence than gradcam and gradcam++ [imagenet]"] == NOT_REPRODUCED
    assert (frame["n"] == N).all() and frame["baseline"].str.startswith("centre-point map").all()


def localization_scores(cam_misses: np.ndarray, baseline_misses: np.ndarray) -> dict:
    return {"cam": {"loc_err_20": cam_misses}, "gradcam": {"loc_err_15": cam_misses},
            FULL_IMAGE: {"loc_err_15": baseline_misses, "loc_err_20": baseline_misses},
            CENTRE_BOX: {"loc_err_15": baseline_misses, "loc_err_20": baseline_misses}}


def test_localization_rule_against_the_trivial_baselines():
    rng = np.random.default_rng(1)
    misses = (rng.random(N) < 0.5).astype(float)
    same = claims_frame(localization_claims(localization_scores(misses, misses), {}))
    assert (same["verdict"] == NOT_REPRODUCED).all()
    better = claims_frame(localization_claims(localization_scores(misses * (rng.random(N) < 0.2), misses), {}))
    assert (better["verdict"] == REPRODUCED).all()


def test_metrics_table_marks_input_space_localization_and_prints_n():
    rng = np.random.default_rng(2)
    hits = (rng.random(8) < 0.5).astype(float)
    scores = {"gradcam": {"loc_err_15": hits, "average_drop": rng.uniform(0, 50, 8)},
              "saliency": {"loc_err_15": hits, "average_drop": rng.uniform(0, 50, 8)},
              "deconvnet": {"loc_err_15": hits}, FULL_IMAGE: {"loc_err_15": np.ones(8)}}
    table = metrics_table(scores, {"gradcam": 0.1}, deconv_has_switches=False, boxed=True).set_index("method")
    assert table.loc["saliency", "loc_err_15"] == "not comparable"
    assert "without max-pool switches" in table.loc["deconvnet", "localization"]
    assert "fixed map" in table.loc["deconvnet", "map"] and table.loc["saliency", "map"] == "input space"
    assert table.loc["gradcam", "loc_err_15"].endswith("(n = 8)")
    assert table.loc[FULL_IMAGE, "loc_err_15"].startswith("100.0 [")
