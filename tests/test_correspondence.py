"""Table 1's score (mean normalized Hamming distance of sign changes) by hand, the masking, the random regions,
and each answer of the two Table 1 claims on constructed per-image scores."""

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from cnnvis.claims import CONTRADICTED, INCONCLUSIVE, REPRODUCED, UNINFORMATIVE, with_control
from cnnvis.models import IMAGENET_MEAN, ImageClassifier, Normalize
from cnnvis.correspondence import (PARTS, delta, layer5_claim, layer7_claim, location_scores, mask, parts_beat_random,
                                   per_image_delta, random_regions, sign_changes)
from conftest import needs_imagenet_val, run_py
from test_occlusion import tiny_net


def test_delta_by_hand():
    signs = torch.tensor([[1, 0, -1, 1], [1, 0, -1, 1], [1, 1, 1, 1]])
    # pairs (0,1): 0 of 4 differ; (0,2) and (1,2): 2 of 4 differ; each unordered pair counted twice
    assert delta(signs) == pytest.approx((0 + 0.5 + 0.5) * 2 / 6)
    assert delta(signs[:2]) == 0.0


def test_delta_over_changed_features_by_hand():
    signs = torch.tensor([[1, 0, 0, 0], [-1, 0, 0, 1], [0, 0, 0, 0]])
    # changed in i or j: (0,1) features 0 and 3, both differ: 1; (0,2) feature 0, differs: 1; (1,2) 0 and 3: 1
    assert delta(signs, changed_only=True) == 1.0
    assert delta(signs) == pytest.approx((2 / 4 + 1 / 4 + 2 / 4) / 3)  # the unchanged features dilute it
    same = torch.tensor([[1, 0, 0, -1], [1, 0, 0, -1]])
    assert delta(same, changed_only=True) == 0.0
    assert delta(torch.zeros(3, 4), changed_only=True) == 0.0  # nothing changed anywhere: no disagreement


def test_mask_fills_only_the_box():
    x = torch.rand(2, 3, 8, 8)
    out = mask(x, [[1, 2, 4, 5], [0, 0, 2, 8]], torch.tensor([0.1, 0.2, 0.3]))
    assert torch.equal(out[0, :, 2:5, 1:4], torch.tensor([0.1, 0.2, 0.3]).view(3, 1, 1).expand(3, 3, 3))
    untouched = torch.ones(8, 8, dtype=torch.bool)
    untouched[2:5, 1:4] = False
    assert torch.equal(out[0][:, untouched], x[0][:, untouched])
    assert torch.equal(out[1, :, :, 2:], x[1, :, :, 2:])


def test_identical_images_masked_alike_give_zero_and_unmasked_gives_no_change():
    model = tiny_net()
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0)).repeat(5, 1, 1, 1)
    box = [[8, 8, 16, 16]] * 5
    signs = sign_changes(model, x, mask(x, box, 0.5), ["conv1", "conv2"])
    assert all(delta(s) == 0.0 for s in signs.values())
    assert all(s.abs().sum() > 0 for s in signs.values())  # the mask did change the features
    same = sign_changes(model, x, x.clone(), ["conv2"])["conv2"]
    assert (same == 0).all()


def test_per_image_scores_average_to_delta_by_hand():
    signs = torch.tensor([[1, 0, -1, 1], [1, 0, -1, 1], [1, 1, 1, 1]])
    # image 0: against 1 differs 0/4, against 2 2/4 -> 0.25; image 1 the same; image 2: 2/4 and 2/4 -> 0.5
    torch.testing.assert_close(per_image_delta(signs), torch.tensor([0.25, 0.25, 0.5]))
    assert per_image_delta(signs).mean() == pytest.approx(delta(signs))
    with pytest.raises(ValueError, match="experiment.images"):
        per_image_delta(signs[:1])


SIDE, OBJECT = 48, 8


def objects_on_backgrounds(n=10, seed=0):
    """Images of one uniform random background colour each, with the same red square at a random place; the
    squares' boxes and, for each image, a box of the same size on its background."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, 1, 1, generator=g).expand(n, 3, SIDE, SIDE).clone()
    objects, background = [], []
    for i in range(n):
        y0, x0 = (int(v) for v in torch.randint(0, SIDE // 2 - OBJECT, (2,), generator=g))
        x[i, :, y0:y0 + OBJECT, x0:x0 + OBJECT] = torch.tensor([1.0, 0.0, 0.0]).view(3, 1, 1)
        objects.append([x0, y0, x0 + OBJECT, y0 + OBJECT])
        background.append([SIDE - OBJECT - 2, SIDE - OBJECT - 2 - i, SIDE - 2, SIDE - 2 - i])  # bottom right
    return x, objects, background


def mean_colour_net():
    """Its features are the image's mean colour: masking a box changes them by (box colour - fill) x area."""
    return ImageClassifier(Normalize((0.0,) * 3, (1.0,) * 3), nn.Identity(),
                           nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten()), nn.Linear(3, 2),
                           {"colour": "pool"}, input_size=SIDE).eval()


# three draws of random regions, each bottom right: background in every image
BACKGROUND_DRAWS = [[[b, b, b + OBJECT, b + OBJECT]] * 10 for b in (30, 34, 38)]


def test_parts_beat_random_yes_when_the_part_is_the_same_object_in_every_image():
    x, objects, _ = objects_on_backgrounds()
    fill = torch.tensor(IMAGENET_MEAN)
    scores = location_scores(mean_colour_net(), x, {p: objects for p in PARTS}, BACKGROUND_DRAWS, ["colour"], fill)
    diffs, answer = parts_beat_random(scores, "colour")
    assert answer == "reproduced" and all(d.n == len(x) for d in diffs.values())
    at = scores[scores.layer == "colour"]
    assert (at[at.location == "nose"].delta == 0).all()  # red minus grey has the same sign in every image
    claim = layer5_claim(scores, "colour")
    assert claim.verdict == REPRODUCED and claim.n == len(x) and len(claim.evidence) == len(PARTS)


def test_parts_beat_random_no_when_the_part_is_just_another_background_box():
    x, _, background = objects_on_backgrounds()
    fill = torch.tensor(IMAGENET_MEAN)
    scores = location_scores(mean_colour_net(), x, {p: background for p in PARTS}, BACKGROUND_DRAWS, ["colour"], fill)
    assert parts_beat_random(scores, "colour")[1] in ("contradicted", "inconclusive")


def test_random_regions_move_from_image_to_image_and_stay_inside():
    draws = random_regions(12, 224, 26, 21, 3, np.random.default_rng(0))
    assert len(draws) == 3 and all(len(d) == 12 for d in draws)
    boxes = np.asarray(draws)
    assert ((boxes[..., 2] - boxes[..., 0]) == 26).all() and ((boxes[..., 3] - boxes[..., 1]) == 21).all()
    assert (boxes[..., :2] >= 0).all() and (boxes[..., 2] <= 224).all() and (boxes[..., 3] <= 224).all()
    assert len({tuple(b) for b in boxes[0]}) > 1  # not one place shared by every image


def hand_scores(parts, random, layer="L"):
    """A per-image scores frame: ``parts`` (one array of per-image Δ for every part) and the random regions'."""
    rows = [(p, layer, i, float(v)) for p in PARTS for i, v in enumerate(parts)]
    rows += [("random", layer, i, float(v)) for i, v in enumerate(random)]
    return pd.DataFrame(rows, columns=["location", "layer", "image", "delta"])


NOISE = np.random.default_rng(0).normal(0, 1, 12)


@pytest.mark.parametrize("parts, answer", [
    (0.06 + 0.002 * NOISE, REPRODUCED),     # every part well below random
    (0.14 + 0.002 * NOISE, CONTRADICTED),   # every part above random: the masks agree less than random ones
    (0.10 + 0.02 * NOISE, INCONCLUSIVE),    # parts about random, noisy
])
def test_layer5_claim_gives_each_answer(parts, answer):
    claim = layer5_claim(hand_scores(parts, 0.1 + 0.002 * NOISE[::-1]), "L")
    assert claim.verdict == answer and claim.reason.startswith("right eye: ")
    assert "layer 5: right eye 0.067" in claim.paper_number


@pytest.mark.parametrize("ratio, answer", [
    (0.01, REPRODUCED),    # parts within 1 % of random: alike, as the paper's layer 7
    (-0.35, CONTRADICTED),  # parts a third below random: the layer-5 pattern
    (0.10, INCONCLUSIVE),   # at the margin's edge
])
def test_layer7_claim_gives_each_answer(ratio, answer):
    random = 0.5 + 0.01 * NOISE
    claim = layer7_claim(hand_scores(random * (1 + ratio + 0.02 * NOISE[::-1]), random), "L", 0.1)
    assert claim.verdict == answer
    assert "0.073" in claim.paper_number and "± 0.1" in claim.rule


def test_a_control_that_also_reproduces_makes_the_claim_uninformative():
    trained = layer7_claim(hand_scores(0.5 * np.ones(12) + 0.001 * NOISE, 0.5 * np.ones(12)), "L", 0.1)
    alike = layer7_claim(hand_scores(0.3 * np.ones(12) + 0.001 * NOISE, 0.3 * np.ones(12)), "L", 0.1)
    apart = layer7_claim(hand_scores(0.2 * np.ones(12) + 0.001 * NOISE, 0.3 * np.ones(12)), "L", 0.1)
    [exposed] = with_control([trained], [alike])
    assert exposed.verdict == UNINFORMATIVE and exposed.control.endswith("(reproduced)")
    [kept] = with_control([trained], [apart])
    assert kept.verdict == REPRODUCED and kept.control.endswith("(contradicted)")


@needs_imagenet_val
def test_zfnet_correspondence_end_to_end(tmp_path):
    result = run_py("experiment=zfnet_correspondence", "smoke=true", f"results_dir={tmp_path}")
    assert result.returncode == 0, result.stderr[-3000:]
    out = tmp_path / "zfnet_correspondence"
    table = pd.read_csv(out / "table1_correspondence.csv")
    assert list(table.occluded) == ["right eye", "left eye", "nose", "random"]
    assert {"stage4", "head", "pool", "paper layer 5"} <= set(table.columns)
    assert {"paper layer 5", "paper layer 7"} <= set(table.columns)
    claims = pd.read_csv(out / "claims.csv")
    assert len(claims) == 2 and (claims.n >= 5).all() and claims.reason.str.len().gt(0).all()
    assert not claims["random-weights control"].str.startswith("not run").any()
    assert (out / "claims_evidence.npz").is_file()
    changed = pd.read_csv(out / "table1_changed_features.csv")
    assert list(changed.occluded) == list(table.occluded) and {"stage4", "head", "pool"} <= set(changed.columns)
    assert (out / "masked_parts.png").is_file() and (out / "table1_correspondence.png").is_file()  # Table 1 plotted


def test_zfnet_correspondence_rejects_unknown_images(tmp_path):
    result = run_py("experiment=zfnet_correspondence", "smoke=true", "dataset=samples",
                    f"results_dir={tmp_path}")
    assert result.returncode != 0 and "experiment.images must name files of samples" in result.stderr
