"""The batched occlusion engine against a naive loop and against networks whose answer is known by construction."""

import json
import os

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from cnnvis.claims import (COLUMNS, CONTRADICTED, INCONCLUSIVE, NOT_COMPARABLE, REPRODUCED, UNINFORMATIVE,
                           claims_frame, with_control)
from cnnvis.hooks import activations
from cnnvis.models import ImageClassifier, Normalize
from cnnvis import occlusion_measures as om
from cnnvis.occlusion import OcclusionMaps, occlusion_map, occluder_positions
from conftest import assert_argmax_up_to_ties, needs_caltech101, needs_imagenet_val, run_py


def tiny_net(classes=4, crop=None, seed=0):
    """conv-relu-conv-relu -> mean pool -> linear, with readable layer names; ``crop`` limits what it sees."""
    torch.manual_seed(seed)
    features = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 5, 3, stride=2, padding=1), nn.ReLU())
    see = nn.Identity() if crop is None else TopLeft(crop)
    model = ImageClassifier(Normalize((0.5,) * 3, (0.25,) * 3), nn.Sequential(see, features),
                            nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten()), nn.Linear(5, classes),
                            {"conv1": "features.1.1", "conv2": "features.1.3"}, input_size=32)
    return model.eval()


class TopLeft(nn.Module):
    def __init__(self, side):
        super().__init__()
        self.side = side

    def forward(self, x):
        return x[..., : self.side, : self.side]


def naive_maps(model, image, layer, channel, target, size, stride, fill):
    ys, xs = occluder_positions(*image.shape[1:], size, stride)
    act = torch.zeros(len(ys), len(xs))
    prob = torch.zeros_like(act)
    all_logits = torch.zeros(len(ys), len(xs), model.head.out_features)
    for i, y in enumerate(ys.tolist()):
        for j, x in enumerate(xs.tolist()):
            occluded = image.clone()
            occluded[:, y:y + size, x:x + size] = fill.view(3, 1, 1)
            with torch.no_grad():
                logits = model(occluded[None])[0]
            act[i, j] = activations(model, occluded[None], [layer])[layer][0, channel].sum()
            prob[i, j] = logits.softmax(0)[target]
            all_logits[i, j] = logits
    return act, prob, all_logits


def test_batched_map_equals_a_naive_loop():
    model = tiny_net()
    image = torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(1))
    fill = torch.tensor([0.4, 0.5, 0.6])
    maps = occlusion_map(model, image, layer="conv2", channel=3, target=2, size=8, stride=3, batch_size=5, fill=fill)
    act, prob, logits = naive_maps(model, image, "conv2", 3, 2, 8, 3, fill)
    assert maps.activation.shape == (9, 9)
    torch.testing.assert_close(maps.activation, act, atol=1e-5, rtol=0)
    torch.testing.assert_close(maps.probability, prob, atol=1e-5, rtol=0)
    assert_argmax_up_to_ties(maps.top_class, logits)
    assert maps.ys.tolist() == list(range(0, 25, 3)) and maps.xs.tolist() == maps.ys.tolist()


def test_defaults_pick_the_strongest_channel_and_the_predicted_class():
    model = tiny_net()
    image = torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(2))
    maps = occlusion_map(model, image, layer="conv1", size=8, stride=8)
    acts = activations(model, image[None], ["conv1"])["conv1"][0]
    assert maps.channel == int(acts.sum((1, 2)).argmax())
    assert maps.target == maps.clean_top_class == int(model(image[None]).argmax())
    assert maps.clean_activation == pytest.approx(float(acts[maps.channel].sum()), rel=1e-6)


def test_a_network_that_sees_only_the_top_left_quadrant_ignores_occluders_elsewhere():
    model = tiny_net(crop=16)
    image = torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(3))
    maps = occlusion_map(model, image, layer="conv2", size=6, stride=2, batch_size=7, fill=0.5)
    y0, x0 = torch.meshgrid(maps.ys, maps.xs, indexing="ij")
    outside = (y0 >= 16) | (x0 >= 16)
    inside = ~outside
    assert outside.sum() > 50 and inside.sum() > 10
    # occluded batches of 7 against the clean image alone: equal up to the kernels' rounding
    for occluded, clean in [(maps.activation, maps.clean_activation), (maps.probability, maps.clean_probability)]:
        torch.testing.assert_close(occluded[outside], torch.full_like(occluded[outside], clean))
    assert (maps.top_class[outside] == maps.clean_top_class).all()
    # and the quadrant it does see matters: the test can fail
    assert ((maps.activation[inside] - maps.clean_activation).abs() > 1e-3).all()


def test_most_probable_class_map_is_the_argmax_of_the_probability_maps():
    model = tiny_net(classes=5, seed=4)
    image = torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():  # all logits tie on the clean image, so each occluder position picks its own winner
        pooled = model.pool(model.features(model.normalize(image[None])))
        model.classifier.bias.copy_(-(pooled @ model.classifier.weight.T)[0])
    probs = torch.stack([occlusion_map(model, image, target=c, size=10, stride=2, batch_size=32, fill=0).probability
                         for c in range(5)])
    maps = occlusion_map(model, image, size=10, stride=2, fill=0)
    assert_argmax_up_to_ties(maps.top_class, probs.permute(1, 2, 0))  # near-equal classes may swap across batch sizes
    assert len(maps.top_class.unique()) > 1  # the occluder changes the decision somewhere
    torch.testing.assert_close(probs.sum(0), torch.ones_like(maps.probability))


def test_most_sensitive_position_is_where_the_probability_is_lowest():
    model = tiny_net()
    image = torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(5))
    maps = occlusion_map(model, image, size=8, stride=4)
    i, j = maps.most_sensitive()
    assert maps.probability[i, j] == maps.probability.min()


def test_bad_arguments_name_the_fix():
    model, image = tiny_net(), torch.rand(3, 32, 32)
    with pytest.raises(KeyError, match="conv1, conv2"):
        occlusion_map(model, image, layer="conv9", size=8)
    with pytest.raises(ValueError, match="size <= 32"):
        occlusion_map(model, image, size=40)
    with pytest.raises(ValueError, match="5 channels"):
        occlusion_map(model, image, layer="conv2", channel=7, size=8)
    with pytest.raises(ValueError, match="4 classes"):
        occlusion_map(model, image, target=4, size=8)
    with pytest.raises(ValueError, match="one value per channel"):
        occlusion_map(model, image, size=8, fill=[0.1, 0.2])


def test_zfnet_occlusion_falls_back_to_the_sample_photos_without_imagenet(tmp_path):
    without_data_root = {k: v for k, v in os.environ.items() if k != "DATA_ROOT"}  # the only case that falls back
    result = run_py("experiment=zfnet_occlusion", "smoke=true", f"results_dir={tmp_path}", cwd=tmp_path,
                    env=without_data_root)
    assert result.returncode == 0, result.stderr[-3000:]
    out = tmp_path / "zfnet_occlusion"
    assert "falling back to dataset=samples" in result.stdout + result.stderr
    record = json.loads((out / "run.json").read_text())  # what actually ran, not the configured imagenet_val
    assert record["datasets_loaded"][0]["name"] == "samples" and "fallback=samples" in record["changed"]
    assert len(list(out.glob("fig7_*.png"))) == 3
    assert "Caltech" not in (out / "occlusion_quantitative.md").read_text()  # no Caltech-101 there either
    assert "fallback: DATA_ROOT unset" in (out / "occlusion_quantitative.md").read_text()
    measures = pd.read_csv(out / "occlusion_quantitative.csv").measure
    assert measures.str.startswith("sample photos (fallback: DATA_ROOT unset): ").all()  # not "ImageNet:"
    for table in ["fig7_examples", "occlusion_quantitative", "claims"]:
        assert (out / f"{table}.csv").is_file() and (out / f"{table}.md").is_file()


@needs_imagenet_val
@needs_caltech101
def test_zfnet_occlusion_end_to_end_on_real_data(tmp_path):
    result = run_py("experiment=zfnet_occlusion", "smoke=true", f"results_dir={tmp_path}")
    assert result.returncode == 0, result.stderr[-3000:]
    out = tmp_path / "zfnet_occlusion"
    assert len(list(out.glob("fig7_*.png"))) == 3  # smoke's sliver of classes: the first labelled images
    assert all(p.stat().st_size < 1_000_000 for p in out.glob("*.png"))
    quant = pd.read_csv(out / "occlusion_quantitative.csv")
    assert quant.measure.str.contains("inside the object box").any()


# --- the Sec. 4.2 verdicts: each rule on per-image data where the answer must be each of its answers

SIDE, SQUARE = 64, 16  # a 4 x 4 grid of non-overlapping occluders, as the experiment's 56-px grid on 224 px


def fake_maps(probability, top_class=None, activation=None, target=0):
    ys, xs = occluder_positions(SIDE, SIDE, SQUARE, SQUARE)
    probability = torch.as_tensor(probability, dtype=torch.float32)
    top = torch.full(probability.shape, target) if top_class is None else torch.as_tensor(top_class)
    return OcclusionMaps(activation=None if activation is None else torch.as_tensor(activation, dtype=torch.float32),
                         probability=probability, top_class=top, ys=ys, xs=xs, size=SQUARE, stride=SQUARE,
                         layer=None if activation is None else "conv2", channel=None if activation is None else 0,
                         target=target, clean_activation=None if activation is None else 1.0,
                         clean_probability=0.9, clean_top_class=target)


def dip_at(row, col, low=0.1, high=0.9, noise=0.0, rng=None):
    p = np.full((4, 4), high) + (0 if rng is None else rng.uniform(-noise, noise, (4, 4)))
    p[row, col] = low
    return p


def caltech_frame(boxes, dips, tops=None, prior=(1, 1)):
    return pd.DataFrame([om.caltech_measures(fake_maps(p, None if tops is None else tops[k]), b, SIDE, prior, 0.5, 0.1)
                         for k, (b, p) in enumerate(zip(boxes, dips))])


def test_box_overlap_and_centre_inside_match_a_pixel_count():
    ys, xs = occluder_positions(SIDE, SIDE, SQUARE, 8)
    box = (5, 20, 41, 63)  # x0, y0, x1, y1
    mask = torch.zeros(SIDE, SIDE)
    mask[20:63, 5:41] = 1
    expected = torch.tensor([[float(mask[y:y + SQUARE, x:x + SQUARE].mean()) for x in xs] for y in ys])
    torch.testing.assert_close(om.box_overlap(ys, xs, SQUARE, box), expected)
    centre = torch.tensor([[bool(mask[y + SQUARE // 2, x + SQUARE // 2]) for x in xs] for y in ys])
    assert torch.equal(om.centre_inside(ys, xs, SQUARE, box), centre)


def test_a_model_that_always_points_at_the_centre_does_not_beat_the_centre_baseline():
    rng = np.random.default_rng(0)
    boxes = [(16 - d, 16 - d, 48 + d, 48 + d) for d in rng.integers(0, 12, 60)]  # centred objects
    loc = caltech_frame(boxes, [dip_at(1, 1) for _ in boxes])  # the square just above-left of the centre, always
    assert loc.sensitive_inside_box.all() and loc.centre_inside_box.all()
    c = om.localization_claim(loc)
    assert c.verdict == CONTRADICTED and c.n == 60 and len(c.evidence) == 3  # no better than the centre, ever
    assert "image centre" in c.baseline and "fitted" in c.baseline


def test_a_model_that_finds_off_centre_objects_beats_every_baseline():
    rng = np.random.default_rng(1)
    corners = rng.integers(0, 4, (80, 2))  # each object fills one random grid square
    boxes = [(int(c) * SQUARE, int(r) * SQUARE, (int(c) + 1) * SQUARE, (int(r) + 1) * SQUARE) for r, c in corners]
    loc = caltech_frame(boxes, [dip_at(r, c) for r, c in corners], prior=(0, 0))
    assert loc.sensitive_inside_box.all() and loc.centre_inside_box.mean() < 0.5
    assert np.allclose(loc.drop_mass_inside_box, 1.0)  # the only drop is on the object
    assert om.localization_claim(loc).verdict == REPRODUCED


def test_the_drop_on_the_object_must_exceed_the_drop_off_it():
    rng = np.random.default_rng(2)
    boxes = [(0, 0, 32, 32)] * 50  # top-left quarter: 4 squares on, 9 wholly off
    same = [dip_at(3, 3, low=0.5, noise=0.05, rng=rng) for _ in boxes]  # the dip is off the object
    assert om.object_drop_claim(caltech_frame(boxes, same), 0.5, 0.1).verdict == CONTRADICTED
    on = [dip_at(0, 1, low=0.2, noise=0.05, rng=rng) for _ in boxes]
    assert om.object_drop_claim(caltech_frame(boxes, on), 0.5, 0.1).verdict == REPRODUCED


def test_images_without_a_position_off_the_object_are_excluded_and_counted():
    boxes = [(0, 0, 32, 32)] * 10 + [(0, 0, SIDE, SIDE)] * 5  # the last five cover the whole image
    dips = [dip_at(0, 0, low=0.1 + 0.01 * k) for k in range(15)]
    c = om.object_drop_claim(caltech_frame(boxes, dips), 0.5, 0.1)
    assert c.n == 10 and "5 of 15 images excluded" in c.ours
    everything = caltech_frame([(0, 0, SIDE, SIDE)] * 3, dips[:3])
    assert om.object_drop_claim(everything, 0.5, 0.1).verdict == NOT_COMPARABLE


def test_the_top_class_must_change_more_often_on_the_object_than_off_it():
    boxes = [(0, 0, 32, 32)] * 40
    flat = [np.full((4, 4), 0.9)] * 40
    off_changes = np.zeros((4, 4), int)
    off_changes[3, 3] = 7
    on_changes = np.zeros((4, 4), int)
    on_changes[0, :2] = 7
    c_no = om.top_class_claim(caltech_frame(boxes, flat, tops=[off_changes] * 40), 0.5, 0.1)
    c_yes = om.top_class_claim(caltech_frame(boxes, flat, tops=[on_changes] * 40), 0.5, 0.1)
    assert c_no.verdict == CONTRADICTED and c_yes.verdict == REPRODUCED
    assert om.other_object_claim(caltech_frame(boxes, flat, tops=[on_changes] * 40)).verdict == NOT_COMPARABLE


def imagenet_frame(activation_dips, unit_yx, rng):
    maps = [fake_maps(dip_at(2, 2), activation=dip_at(r, c, 0.5, 1.0)) for r, c in activation_dips]
    return pd.DataFrame([om.imagenet_measures(m, unit_yx, (rng.integers(m.probability.shape[0]),
                                                           rng.integers(m.probability.shape[1]))) for m in maps])


def test_the_map_must_drop_more_when_the_occluder_covers_its_strongest_unit():
    rng = np.random.default_rng(3)
    unit = (40.0, 8.0)  # inside the square of row 2, column 0
    covering = imagenet_frame([(2, 0)] * 30, unit, rng)
    assert np.allclose(covering.map_drop_covering, 0.5)
    assert om.map_drop_claim(covering).verdict == REPRODUCED
    elsewhere = imagenet_frame([tuple(rng.integers(0, 4, 2)) for _ in range(30)], (8.0, 56.0), rng)
    elsewhere = elsewhere[elsewhere.map_drop_covering < 0.25]  # the dip never on the unit's square
    assert om.map_drop_claim(elsewhere).verdict == CONTRADICTED


def test_map_and_class_moving_together_on_every_image_contradicts():
    together = pd.DataFrame({"corr_map_vs_class": np.linspace(0.6, 0.99, 200)})
    assert om.map_not_alone_claim(together).verdict == CONTRADICTED
    apart = pd.DataFrame({"corr_map_vs_class": np.r_[np.full(60, -0.2), np.full(140, 0.9)]})
    assert om.map_not_alone_claim(apart).verdict == REPRODUCED
    borderline = pd.DataFrame({"corr_map_vs_class": np.r_[np.full(10, -0.2), np.full(190, 0.9)]})  # 5 % of images
    assert om.map_not_alone_claim(borderline).verdict == INCONCLUSIVE
    assert om.map_not_alone_claim(pd.DataFrame({"corr_map_vs_class": [np.nan] * 3})).verdict == NOT_COMPARABLE


# per-image paired values a - b: 8 images +1, 6 images -1, 16 equal; a mean of +0.07 whose interval straddles 0
A_NEAR_B = np.r_[np.ones(8), np.zeros(6), np.zeros(16)], np.r_[np.zeros(8), np.ones(6), np.zeros(16)]


def test_localization_is_inconclusive_when_the_model_barely_beats_the_centre():
    model, centre = A_NEAR_B
    loc = pd.DataFrame({"sensitive_inside_box": model.astype(bool), "centre_inside_box": centre.astype(bool),
                        "uniform_inside_box": np.zeros(30), "prior_inside_box": np.zeros(30, bool)})
    c = om.localization_claim(loc)
    assert c.verdict == INCONCLUSIVE and "smallest detectable effect" in c.reason


@pytest.mark.parametrize("make_claim, on, off", [
    (lambda f: om.object_drop_claim(f, 0.5, 0.1), "drop_on_box", "drop_off_box"),
    (lambda f: om.top_class_claim(f, 0.5, 0.1), "changed_on_box", "changed_off_box"),
    (om.map_drop_claim, "map_drop_covering", "map_drop_elsewhere"),
])
def test_the_paired_on_off_claims_are_inconclusive_when_the_difference_is_within_noise(make_claim, on, off):
    a, b = A_NEAR_B
    c = make_claim(pd.DataFrame({on: 0.1 + a, off: 0.1 + b, "correct": np.ones(30, bool)}))
    assert c.verdict == INCONCLUSIVE and c.n == 30


def test_claims_table_has_the_shared_shape_and_marks_missing_boxes_not_comparable():
    rng = np.random.default_rng(4)
    drop = imagenet_frame([(2, 0)] * 5, (40.0, 8.0), rng)
    claims = om.claims_table(drop, None, 0.5, 0.1)
    table = claims_frame(claims)
    assert list(table.columns) == COLUMNS
    assert (table.verdict.iloc[2:] == NOT_COMPARABLE).all() and len(table) == 6
    assert table.reason.iloc[2:].str.startswith("no boxed Caltech-101 images").all()


def test_a_random_control_that_passes_the_same_rule_makes_the_claim_uninformative():
    rng = np.random.default_rng(5)
    trained = om.claims_table(imagenet_frame([(2, 0)] * 30, (40.0, 8.0), rng), None, 0.5, 0.1)
    assert trained[0].verdict == REPRODUCED  # the map drops where its unit is covered
    exposed = with_control(trained, om.claims_table(imagenet_frame([(2, 0)] * 10, (40.0, 8.0), rng), None, 0.5, 0.1))
    assert exposed[0].verdict == UNINFORMATIVE and "(n = 10)" in exposed[0].control
    assert exposed[0].control.endswith("(reproduced)") and len(exposed[0].control_evidence) == 1
    assert [c.verdict for c in exposed[2:]] == [NOT_COMPARABLE] * 4  # a control cannot expose what was not measured
    elsewhere = imagenet_frame([tuple(rng.integers(0, 4, 2)) for _ in range(30)], (8.0, 56.0), rng)
    honest = with_control(trained, om.claims_table(elsewhere[elsewhere.map_drop_covering < 0.25], None, 0.5, 0.1))
    assert honest[0].verdict == REPRODUCED and honest[0].control.endswith("(contradicted)")


# --- panel (c): guided backprop on switchless networks, against the filter it must return

def one_conv(act):
    torch.manual_seed(5)
    conv = nn.Conv2d(3, 4, 3, padding=1, bias=False)
    block = nn.Sequential(conv, act)
    return ImageClassifier(Normalize((0.5,) * 3, (0.25,) * 3), nn.Sequential(block),
                           nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten()), nn.Linear(4, 2),
                           {"block": "features.0"}, input_size=16).eval()


@pytest.mark.parametrize("act", [nn.ReLU(), nn.ReLU6()])
def test_guided_projection_of_one_unit_is_its_filter_even_when_the_unit_saturates(act):
    model = one_conv(act)
    with torch.no_grad():
        model.features[0][0].weight.mul_(50)  # ReLU6 saturates: the plain gradient through it would be zero
    image = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(6))
    acts = activations(model, image, ["block"])["block"][:, 1]
    locations = [divmod(int(a.argmax()), 16) for a in acts]
    proj = om.guided_project_units(model, image, "block", 1, locations)
    for k, (y, x) in enumerate(locations):
        expected = torch.zeros(3, 18, 18)
        expected[:, y:y + 3, x:x + 3] = model.features[0][0].weight[1].detach() / 0.25
        torch.testing.assert_close(proj[k], expected[:, 1:17, 1:17])


def test_panel_c_uses_the_deconvnet_only_where_max_pool_switches_exist():
    switches = ImageClassifier(Normalize((0.5,) * 3, (0.25,) * 3),
                               nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)),
                               nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten()), nn.Linear(4, 2),
                               {"pool1": "features.2"}, input_size=16)
    assert om.projection_method(switches, "pool1") == "deconvnet"
    assert om.projection_method(one_conv(nn.ReLU6()), "block") == "guided backprop"


class TensorImages:
    """The one method of an ImageSet that panel (c) calls."""

    def __init__(self, x):
        self.x = x

    def tensors(self, idx, size):
        return self.x[list(idx)]


def test_panel_c_projects_the_maps_top_activations_in_the_other_images():
    from cnnvis.deconvnet import deconv_project
    from cnnvis.mining import top_activations
    from cnnvis.receptive_field import crop_patch, receptive_field

    torch.manual_seed(7)
    model = ImageClassifier(Normalize((0.5,) * 3, (0.25,) * 3),
                            nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)),
                            nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten()), nn.Linear(4, 2),
                            {"pool1": "features.2"}, input_size=16).eval()
    images = torch.rand(6, 3, 16, 16, generator=torch.Generator().manual_seed(8))
    top = top_activations(model, images, ["pool1"], k=4, size=16, progress=False)["pool1"]
    example = top.location(1, 0)[0]  # the map's strongest image is the one shown: it must not reappear
    proj, others = om.panel_c(model, TensorImages(images), images[example], "pool1", 1, top, np.arange(6), example,
                              3, 16, "deconvnet")
    torch.testing.assert_close(proj, deconv_project(model, images[example][None], "pool1", 1)[0])
    assert len(others) == 3
    for rank, other in zip(range(1, 4), others):
        i, y, x = top.location(1, rank)
        expected = deconv_project(model, images[i][None], "pool1", 1, location=(y, x))[0]
        torch.testing.assert_close(other, crop_patch(expected, receptive_field(model, "pool1", y, x, 16)))
