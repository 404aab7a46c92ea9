"""Table 1's score (mean normalized Hamming distance of sign changes) by hand, and the masking."""

import pandas as pd
import pytest
import torch
from torch import nn

from cnnvis.models import IMAGENET_MEAN, ImageClassifier, Normalize
from cnnvis.correspondence import (PARTS, delta, location_scores, mask, parts_beat_random, per_image_delta,
                                   sign_changes)
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


def test_parts_beat_random_yes_when_the_part_is_the_same_object_in_every_image():
    x, objects, _ = objects_on_backgrounds()
    random_boxes = [[b, b, b + OBJECT, b + OBJECT] for b in (30, 34, 38)]  # bottom right: background in every image
    fill = torch.tensor(IMAGENET_MEAN)
    scores = location_scores(mean_colour_net(), x, {p: objects for p in PARTS}, random_boxes, ["colour"], fill)
    diffs, holds = parts_beat_random(scores, "colour")
    assert holds and all(d.n == len(x) for d in diffs.values())
    at = scores[scores.layer == "colour"]
    assert (at[at.location == "nose"].delta == 0).all()  # red minus grey has the same sign in every image


def test_parts_beat_random_no_when_the_part_is_just_another_background_box():
    x, _, background = objects_on_backgrounds()
    random_boxes = [[b, b, b + OBJECT, b + OBJECT] for b in (30, 34, 38)]
    fill = torch.tensor(IMAGENET_MEAN)
    scores = location_scores(mean_colour_net(), x, {p: background for p in PARTS}, random_boxes, ["colour"], fill)
    assert not parts_beat_random(scores, "colour")[1]


@needs_imagenet_val
def test_zfnet_correspondence_end_to_end(tmp_path):
    result = run_py("experiment=zfnet_correspondence", "smoke=true", f"results_dir={tmp_path}")
    assert result.returncode == 0, result.stderr[-3000:]
    out = tmp_path / "zfnet_correspondence"
    table = pd.read_csv(out / "table1_correspondence.csv")
    assert list(table.occluded) == ["right eye", "left eye", "nose", "random"]
    assert {"stage4", "head", "pool", "paper layer 5"} <= set(table.columns)
    claims = pd.read_csv(out / "claims.csv")
    assert (claims.n >= 5).all() and set(claims.verdict) <= {"reproduced", "not reproduced"}
    changed = pd.read_csv(out / "table1_changed_features.csv")
    assert list(changed.occluded) == list(table.occluded) and {"stage4", "head", "pool"} <= set(changed.columns)
    assert (out / "masked_parts.png").is_file()


def test_zfnet_correspondence_rejects_unknown_images(tmp_path):
    result = run_py("experiment=zfnet_correspondence", "smoke=true", "dataset=samples",
                    f"results_dir={tmp_path}")
    assert result.returncode != 0 and "experiment.images must name files of samples" in result.stderr
