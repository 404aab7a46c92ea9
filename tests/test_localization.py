"""Map-scoring metrics against hand-computed answers."""

import numpy as np
import pytest
import torch
from torch import nn

from cnnvis import localization as loc


def test_box_from_map_takes_the_largest_component_above_the_threshold():
    m = np.zeros((20, 30))
    m[2:6, 3:7] = 1.0  # 16 pixels at the maximum
    m[10:18, 12:25] = 0.5  # 104 pixels, above 20% of the max: the largest component
    m[0, 29] = 0.1  # below 20%: ignored
    np.testing.assert_array_equal(loc.box_from_map(m, 0.2), [12, 10, 25, 18])
    np.testing.assert_array_equal(loc.box_from_map(m, 0.6), [3, 2, 7, 6])  # only the peak survives
    diagonal = np.eye(5)  # 8-connected: one component along the diagonal
    np.testing.assert_array_equal(loc.box_from_map(diagonal), [0, 0, 5, 5])
    np.testing.assert_array_equal(loc.box_from_map(np.zeros((4, 6))), [0, 0, 6, 4])


def test_iou():
    assert loc.iou([0, 0, 10, 10], [0, 0, 10, 10]) == 1.0
    assert loc.iou([0, 0, 10, 10], [5, 0, 15, 10]) == pytest.approx(50 / 150)
    assert loc.iou([0, 0, 2, 2], [3, 3, 4, 4]) == 0.0
    assert loc.localized(np.pad(np.ones((10, 10)), 5), [5, 5, 15, 15], 0.2)
    assert not loc.localized(np.pad(np.ones((10, 10)), 5), [0, 0, 6, 6], 0.2)


def test_pointing_game_tolerance():
    m = np.zeros((50, 50))
    m[25, 40] = 1  # centre at (40.5, 25.5)
    assert loc.pointing_hit(m, [30, 20, 45, 30])
    assert loc.pointing_hit(m, [0, 0, 30, 30], tolerance=15)  # 10.5 px away
    assert not loc.pointing_hit(m, [0, 0, 30, 30], tolerance=10)


class MeanLogit(nn.Module):
    """logits = (4 * mean of channel 0 of the image, 0): class 0's probability is sigmoid(4 m)."""

    def forward(self, x):
        m = x[:, 0].mean((1, 2))
        return torch.stack([4 * m, torch.zeros_like(m)], 1)


def test_average_drop_and_increase_in_confidence_by_hand():
    x = torch.ones(2, 3, 4, 4)
    maps = torch.zeros(2, 4, 4)
    maps[0, :2] = 2.0  # scaled to [0, 1]: half the image kept
    maps[1] = torch.arange(16.0).view(4, 4)  # kept fraction mean(0..15)/15 = 0.5 as well
    out = loc.confidence_change(MeanLogit(), x, maps, 0)
    y, o = torch.sigmoid(torch.tensor(4.0)), torch.sigmoid(torch.tensor(2.0))
    assert out["average_drop"] == pytest.approx(float((y - o) / y * 100), rel=1e-5)
    assert out["increase_in_confidence"] == 0.0
    up = loc.confidence_change(MeanLogit(), 0.5 * x, maps, 1)  # class 1 gains when the image darkens
    assert up["increase_in_confidence"] == 100.0 and up["average_drop"] == 0.0


def test_deletion_and_insertion_curves_against_a_pixel_loop():
    torch.manual_seed(0)
    image, saliency = torch.rand(3, 6, 6), torch.rand(6, 6)
    model = MeanLogit()
    for mode in ("deletion", "insertion"):
        curve = loc.causal_curve(model, image, saliency, 0, mode, steps=36)
        canvas = image.clone() if mode == "deletion" else loc.blurred(image[None])[0]
        expected = [torch.sigmoid(4 * canvas[0].mean())]
        for flat in torch.argsort(saliency.flatten(), descending=True):  # one pixel per step
            i, j = divmod(int(flat), 6)
            canvas[:, i, j] = 0 if mode == "deletion" else image[:, i, j]
            expected.append(torch.sigmoid(4 * canvas[0].mean()))
        torch.testing.assert_close(curve, torch.stack(expected))
    assert loc.auc(torch.linspace(0, 1, 11)) == pytest.approx(0.5)
    assert loc.auc(torch.ones(5)) == pytest.approx(1.0)


def test_trivial_baseline_boxes_by_hand():
    # a 100x200 (H x W) image; boxes 20x40 and 60x80 (W x H): the left-out mean of the first is the second's size
    boxes = np.array([[0, 0, 20, 40], [10, 10, 70, 90], [50, 20, 90, 60]], dtype=float)
    np.testing.assert_array_equal(loc.full_image_box(100, 200), [0, 0, 200, 100])
    centred = loc.centre_boxes_left_out(boxes, 100, 200)
    # image 0: mean of the others' widths (60, 40) = 50, heights (80, 40) = 60 -> centred at (100, 50)
    np.testing.assert_allclose(centred[0], [75, 20, 125, 80])
    # image 2: widths (20, 60) -> 40, heights (40, 80) -> 60
    np.testing.assert_allclose(centred[2], [80, 20, 120, 80])
    assert loc.iou(loc.full_image_box(100, 200), [0, 0, 200, 100]) == 1.0
    with pytest.raises(ValueError, match="at least 2"):
        loc.centre_boxes_left_out(boxes[:1], 100, 200)


def test_centre_point_map_points_at_the_centre():
    m = loc.centre_point_map(9, 11)
    assert np.unravel_index(int(m.argmax()), m.shape) == (4, 5)
    assert loc.pointing_hit(m, [5, 4, 6, 5], tolerance=0)  # the centre pixel's box
    assert not loc.pointing_hit(m, [0, 0, 2, 2], tolerance=2)


def test_score_dataset_scores_every_method_and_baseline_on_the_images_it_mapped():
    from tests.test_sanity import TinyNet

    torch.manual_seed(0)
    net = TinyNet().eval()
    x = torch.rand(5, 3, 32, 32)
    targets = net(x).argmax(1)
    boxes = np.array([[4, 4, 20, 20]] * 5)
    options = dict(layer="conv2", layercam_layers=["conv1", "conv2"], batch_size=2, scorecam_batch_size=2)
    scores, seconds, shown, predicted = loc.score_dataset(
        net, net, x, targets, ["gradcam", "scorecam", "saliency"], options, scorecam_images=2, figure_images=3,
        n_curve=1, steps=3, tolerance=5.0, boxes=boxes, desc="test")
    assert set(scores) == {"gradcam", "scorecam", "saliency", loc.FULL_IMAGE, loc.CENTRE_BOX, loc.CENTRE_POINT}
    assert set(seconds) == set(shown) == set(predicted) == {"gradcam", "scorecam", "saliency"}
    assert len(shown["gradcam"]) == 3 and len(shown["scorecam"]) == 2
    for name in ("gradcam", "saliency"):
        assert all(len(v) == 5 for k, v in scores[name].items() if k != "curves")
        assert np.isfinite(scores[name]["average_drop"]).all()
        assert np.isfinite(scores[name]["deletion_auc"]).sum() == 1  # the curves on the first n_curve images only
    assert np.isfinite(scores["scorecam"]["average_drop"]).sum() == 2  # Score-CAM on its first images, NaN past them
    table = loc.metrics_table(scores, seconds, deconv_has_switches=True, boxed=True).set_index("method")
    assert table.loc["scorecam", "average_drop"].endswith("(n = 2)")
    assert table.loc[loc.FULL_IMAGE, "loc_err_15"].endswith("(n = 5)")


def test_score_dataset_without_curves_scores_only_the_rest():
    # the random-weights control's claims need no deletion / insertion curves: n_curve = 0 skips them
    from tests.test_sanity import TinyNet

    torch.manual_seed(0)
    net = TinyNet().eval()
    x = torch.rand(3, 3, 32, 32)
    options = dict(layer="conv2", layercam_layers=["conv1", "conv2"], batch_size=2, scorecam_batch_size=2)
    scores, *_ = loc.score_dataset(net, net, x, net(x).argmax(1), ["gradcam"], options, scorecam_images=3,
                                   figure_images=0, n_curve=0, steps=3, tolerance=5.0, boxes=None, desc="test")
    assert "deletion_auc" not in scores["gradcam"] and scores["gradcam"]["curves"] == {}
    assert np.isfinite(scores["gradcam"]["average_drop"]).all()
    assert np.isfinite(scores[loc.CENTRE_POINT]["average_drop"]).all()


def test_random_control_depends_on_the_image_is_seeded_and_leaves_the_runs_stream():
    torch.manual_seed(0)
    images = torch.rand(8, 3, 64, 64)
    state = torch.random.get_rng_state()
    net = loc.random_control("efficientnet_lite0", 1000, 64, 0)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert not net.training and not any(p.requires_grad for p in net.parameters())
    with torch.no_grad():
        out = net(images)
        torch.testing.assert_close(loc.random_control("efficientnet_lite0", 1000, 64, 0)(images), out)
        spread = float((out - out.mean(0)).abs().max() / out.abs().max())
        assert spread > 1e-2  # a live random network: its output depends on the image