"""Targets beyond a class score (cnnvis.targets) behind the same ``method.attribute(x, target)``: a class
probability, a segmentation region and a detection give the maps pytorch-grad-cam gives with its
ClassifierOutputSoftmaxTarget, SemanticSegmentationTarget and FasterRCNNBoxScoreTarget on the same model and layer;
a ClassScore callable gives the int fast path's maps; bad targets fail naming the fix."""

from collections import OrderedDict

import pytest
import torch
from torch import nn

from cnnvis import cams, reshapes, targets
from cnnvis.models import Segmenter, alexnet, build_model, get_layer
from test_cams import assert_nontrivial

SIZE = 64
GRADIENT_METHODS = ["GradCAM", "GradCAMPlusPlus", "LayerCAM"]


def small_body():
    torch.manual_seed(0)
    return nn.Sequential(OrderedDict(
        c1=nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.ReLU()), c2=nn.Sequential(nn.Conv2d(8, 8, 3, 2, 1), nn.ReLU()),
        c3=nn.Sequential(nn.Conv2d(8, 8, 3, 2, 1), nn.ReLU())))


@pytest.fixture(scope="module")
def classifier():
    torch.manual_seed(0)
    return alexnet(num_classes=10, input_size=SIZE, width=0.25).eval()


@pytest.fixture(scope="module")
def segmenter():
    """torchvision's FCN class on a small conv body, behind cnnvis's Segmenter (normalization, (N, K, H, W))."""
    from torchvision.models._utils import IntermediateLayerGetter
    from torchvision.models.segmentation.fcn import FCN, FCNHead

    torch.manual_seed(0)
    net = FCN(IntermediateLayerGetter(small_body(), {"c3": "out"}), FCNHead(8, 3))
    return Segmenter(net, SIZE).eval()


@pytest.fixture(scope="module")
def detector():
    """torchvision's FasterRCNN class on a small conv body with a 4-channel FPN (levels 0, 1, pool)."""
    from torchvision.models.detection import FasterRCNN
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.backbone_utils import BackboneWithFPN
    from torchvision.ops import MultiScaleRoIAlign

    backbone = BackboneWithFPN(small_body(), {"c2": "0", "c3": "1"}, [8, 8], out_channels=4)
    net = FasterRCNN(backbone, num_classes=3, min_size=SIZE, max_size=SIZE,
                     rpn_anchor_generator=AnchorGenerator(((16,), (32,), (64,)), ((1.0,),) * 3),
                     box_roi_pool=MultiScaleRoIAlign(["0", "1"], 7, 2), representation_size=32)
    net.layers = {"backbone": "backbone", "fpn0": "backbone.fpn.layer_blocks.0", "c3": "backbone.body.c3"}
    net.task, net.cam_reshape = "detection", reshapes.fpn_reshape
    return net.eval()


@pytest.fixture(scope="module")
def images():
    torch.manual_seed(2)
    return torch.rand(2, 3, SIZE, SIZE)


def peer_map(method, model, layer, x, peer_targets, reshape_transform=None):
    import pytorch_grad_cam

    with getattr(pytorch_grad_cam, method)(model, [get_layer(model, layer)], reshape_transform=reshape_transform) as peer:
        return torch.from_numpy(peer(x, peer_targets))


def ours(method, model, layer, x, target):
    with getattr(cams, method)(model, layer) as attribution:
        return cams.normalize_maps(attribution.attribute(x, target))


def scaled(target, factor=1e4):
    """The same target times a constant. Random small networks give maps of ~1e-5, where pytorch-grad-cam's two
    min-max scalings (eps 1e-7 each) and ours (one) part ways by ~1e-3; a constant factor changes nothing else."""
    return lambda output: factor * target(output)


@pytest.mark.parametrize("method", GRADIENT_METHODS + ["ScoreCAM"])
def test_class_probability_equals_pytorch_grad_cams_softmax_target(classifier, images, method):
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget

    mine_targets = [targets.ClassProbability(3), targets.ClassProbability(7)]
    peer_targets = [ClassifierOutputSoftmaxTarget(3), ClassifierOutputSoftmaxTarget(7)]
    if method != "ScoreCAM":
        mine_targets, peer_targets = [scaled(t) for t in mine_targets], [scaled(t) for t in peer_targets]
    layer = "conv3" if method == "ScoreCAM" else "conv4"
    mine = ours(method, classifier, layer, images, mine_targets)
    theirs = peer_map(method, classifier, layer, images, peer_targets)
    assert_nontrivial(theirs)
    torch.testing.assert_close(mine, theirs, atol=1e-5, rtol=0)


def test_class_score_callable_gives_the_int_paths_maps(classifier, images):
    for method in ("GradCAM", "ScoreCAM"):
        as_int = ours(method, classifier, "conv4", images, [3, 7])
        as_callable = ours(method, classifier, "conv4", images, [targets.ClassScore(3), targets.ClassScore(7)])
        torch.testing.assert_close(as_callable, as_int, atol=1e-6, rtol=0)
    one_for_all = ours("GradCAM", classifier, "conv4", images, targets.ClassScore(3))
    torch.testing.assert_close(one_for_all, ours("GradCAM", classifier, "conv4", images, 3), atol=1e-6, rtol=0)


@pytest.mark.parametrize("method", GRADIENT_METHODS + ["ScoreCAM"])
def test_segmentation_region_equals_pytorch_grad_cams_semantic_target(segmenter, images, method):
    from pytorch_grad_cam.utils.model_targets import SemanticSegmentationTarget

    with torch.no_grad():
        labels = segmenter(images).argmax(1)
    category = int(labels.flatten().mode().values)  # the class the model paints most: a region with pixels
    masks = [(label == category).float() for label in labels]
    assert all(m.sum() > 0 for m in masks)
    mine_targets = [targets.SegmentationRegion(category, m) for m in masks]
    peer_targets = [SemanticSegmentationTarget(category, m.numpy()) for m in masks]
    if method != "ScoreCAM":
        mine_targets, peer_targets = [scaled(t) for t in mine_targets], [scaled(t) for t in peer_targets]
    mine = ours(method, segmenter, "backbone_out", images, mine_targets)
    theirs = peer_map(method, segmenter, "backbone_out", images, peer_targets)
    assert_nontrivial(theirs)
    # Score-CAM here runs with the head's BatchNorm folded and channels-last: float sums part from the peer's at
    # ~1e-6, which the softmax over this random net's near-equal region scores lifts to 5e-5 at 1 thread
    torch.testing.assert_close(mine, theirs, atol=1e-4 if method == "ScoreCAM" else 1e-5, rtol=0)


@pytest.mark.parametrize("method, layer", [("GradCAM", "fpn0"), ("GradCAM", "c3"), ("GradCAMPlusPlus", "c3"),
                                           ("LayerCAM", "c3"), ("ScoreCAM", "backbone")])
def test_detection_box_equals_pytorch_grad_cams_faster_rcnn_target(detector, images, method, layer):
    """Reference boxes: the model's own top three detections. ScoreCAM reads the whole FPN (a dict of levels)
    through fpn_reshape, as pytorch-grad-cam's fasterrcnn_reshape_transform; gradient methods a tensor layer."""
    from pytorch_grad_cam.utils.model_targets import FasterRCNNBoxScoreTarget
    from pytorch_grad_cam.utils.reshape_transforms import fasterrcnn_reshape_transform

    x = images[:1]
    with torch.no_grad():
        (found,) = detector(x)
    boxes, labels = found["boxes"][:3], found["labels"][:3]
    mine_target = targets.DetectionBox(labels, boxes)
    peer_target = FasterRCNNBoxScoreTarget(labels.numpy(), boxes.numpy())
    if method != "ScoreCAM":  # softmax over 12 masked scores is saturated by the factor; Score-CAM's maps are O(1)
        mine_target, peer_target = scaled(mine_target), scaled(peer_target)
    mine = ours(method, detector, layer, x, mine_target)
    theirs = peer_map(method, detector, layer, x, [peer_target],
                      fasterrcnn_reshape_transform if layer == "backbone" else None)
    assert_nontrivial(theirs)
    torch.testing.assert_close(mine, theirs, atol=1e-5, rtol=0)


def test_detection_box_scores_by_hand():
    """IoU + score of the best-overlapping detection with the same label; nothing below the IoU threshold."""
    output = {"boxes": torch.tensor([[0.0, 0, 10, 10], [20, 20, 30, 30]]), "labels": torch.tensor([1, 2]),
              "scores": torch.tensor([0.9, 0.8])}
    half = targets.DetectionBox([1], [[0, 0, 10, 5]])  # IoU 0.5: not above the threshold
    assert float(half(output)) == 0.0
    both = targets.DetectionBox([1, 2], [[0, 0, 10, 10], [20, 20, 30, 25]])  # IoU 1 (+0.9), IoU 0.5 (no)
    torch.testing.assert_close(both(output), torch.tensor(1.9))
    wrong_label = targets.DetectionBox([2], [[0, 0, 10, 10]])
    assert float(wrong_label(output)) == 0.0
    assert float(both({"boxes": torch.zeros(0, 4), "labels": torch.zeros(0), "scores": torch.zeros(0)})) == 0.0


def test_segmentation_region_sums_the_class_logits_over_the_mask():
    output = torch.arange(2 * 2 * 3, dtype=torch.float32).reshape(2, 2, 3)
    mask = torch.tensor([[1, 0, 1], [0, 0, 1]])
    assert float(targets.SegmentationRegion(1, mask)(output)) == 6 + 8 + 11


def test_a_target_with_no_match_gives_a_zero_map(detector, images):
    nowhere = targets.DetectionBox([1], [[0, 0, 1, 1]])
    with cams.GradCAM(detector, "c3") as method:
        assert method.attribute(images[:1], nowhere).abs().max() == 0


def test_bad_targets_name_the_fix(classifier, segmenter, detector, images):
    with cams.GradCAM(segmenter, "backbone_out") as method, pytest.raises(ValueError, match="give a target"):
        method.attribute(images)
    with cams.CAM(segmenter, "backbone_out") as method, pytest.raises(ValueError, match="GradCAM / ScoreCAM"):
        method.attribute(images, targets.SegmentationRegion(0, torch.ones(SIZE, SIZE)))
    with cams.GradCAM(detector, "backbone") as method, pytest.raises(ValueError, match="not one tensor"):
        method.attribute(images[:1], targets.DetectionBox([1], [[0, 0, 9, 9]]))
    with cams.GradCAM(classifier, "conv4") as method:
        with pytest.raises(ValueError, match="without mixing"):
            method.attribute(images, [3, targets.ClassScore(3)])
        with pytest.raises(ValueError, match="one scalar tensor"):
            method.attribute(images, lambda logits: logits[:2])
    with pytest.raises(ValueError, match=r"\(H, W\) mask"):
        targets.SegmentationRegion(0, torch.ones(1, SIZE, SIZE))
    with pytest.raises(ValueError, match="at the mask's size"):
        targets.SegmentationRegion(0, torch.ones(8, 8))(torch.zeros(3, SIZE, SIZE))
    with pytest.raises(ValueError, match="one per box"):
        targets.DetectionBox([1, 2], [[0, 0, 1, 1]])


@pytest.mark.parametrize("name", ["deeplabv3_mobilenet_v3_large", "fcn_resnet50"])
def test_real_segmenters_equal_pytorch_grad_cam(name, images):
    from pytorch_grad_cam.utils.model_targets import SemanticSegmentationTarget

    torch.manual_seed(0)
    model = build_model(name, pretrained=False, input_size=SIZE).eval()
    assert model.task == "segmentation" and model.weights_source == "random init"
    x = images[:1]
    with torch.no_grad():
        out = model(x)
    assert out.shape == (1, 21, SIZE, SIZE)
    mask = torch.ones(SIZE, SIZE)
    layer = model.roles["last_conv"]
    mine = ours("GradCAM", model, layer, x, scaled(targets.SegmentationRegion(5, mask), 1e6))
    theirs = peer_map("GradCAM", model, layer, x, [scaled(SemanticSegmentationTarget(5, mask.numpy()), 1e6)])
    torch.testing.assert_close(mine, theirs, atol=1e-5, rtol=0)


def test_real_detector_runs_every_gradient_method_on_its_tensor_layers(images):
    torch.manual_seed(0)
    model = build_model("fasterrcnn_mobilenet_v3_large_fpn", num_classes=3, pretrained=False, input_size=SIZE * 2).eval()
    assert model.task == "detection" and model.roles["last_conv"] == "backbone"
    x = torch.nn.functional.interpolate(images[:1], scale_factor=2)
    with torch.no_grad():
        (found,) = model(x)
    target = targets.DetectionBox(found["labels"][:1], found["boxes"][:1])
    for method in GRADIENT_METHODS:
        for layer in ("fpn_level0", "body_out"):
            with getattr(cams, method)(model, layer) as attribution:
                assert attribution.attribute(x, target, upsample_to_input=False).shape == (1, 4, 4)
    with cams.LayerCAM(model, "fpn_level0") as attribution:  # the level the box head reads: a gradient reaches it
        assert attribution.attribute(x, target).abs().max() > 0
    with cams.GradCAM(model, "backbone") as attribution, pytest.raises(ValueError, match="body_out, fpn_level0"):
        attribution.attribute(x, target)


def test_scorecam_on_a_detector_runs_the_model_itself():
    """A random Faster R-CNN's box scores are near-tied (~1/91), so NMS and top-k pick its boxes by rounding: at
    160 px the BatchNorm-folded channels-last copy gave one masked image score 0 (its box lost) where the
    model gives 0.64. ScoreCAM ignores fast=True on a detector, saying so, and equals Score-CAM by hand: each
    masked image through the model alone, the softmax of the scores weighting the two channels."""
    torch.manual_seed(0)
    model = build_model("fasterrcnn_mobilenet_v3_large_fpn", pretrained=False, input_size=160).eval()
    model.roi_heads.score_thresh = 0.0  # a random detector's scores sit under torchvision's 0.05
    x = torch.rand(1, 3, 160, 160)
    with torch.no_grad():
        (found,) = model(x)
    target = targets.DetectionBox(found["labels"][:1], found["boxes"][:1])
    layer = "backbone.body.0"
    with cams.Attribution(model, layer) as recorder, torch.no_grad():
        model(x)
        every = recorder.activations[layer][0]
        up = torch.nn.functional.interpolate(every[None], size=(160, 160), mode="bilinear", align_corners=True)[0]
        every_score = torch.stack([target(model(x * (u - u.min()) / (u.max() - u.min() + 1e-8))[0]) for u in up])
    # channel 0 and the first whose masked image keeps another box (which ones tie depends on the CPU's rounding),
    # so the softmax weights are not uniform
    other = next((c for c in range(1, len(every_score)) if every_score[c] != every_score[0]), None)
    assert other is not None, f"every masked image scores {every_score[0]:.3f}: no pair tells the weights apart"
    channels = [0, other]
    with pytest.warns(UserWarning, match="fast=True is ignored"):
        method = cams.ScoreCAM(model, layer, batch_size=1, relu=False, reshape=lambda a: a[:, channels])
    with method:
        mine = method.attribute(x, target, upsample_to_input=False)
    acts, scores = every[channels], every_score[channels]
    torch.testing.assert_close(mine[0], (torch.softmax(scores, 0)[:, None, None] * acts).sum(0))


def test_scorecam_fast_path_equals_the_model_on_a_segmenter():
    """DeepLabV3 (BatchNorm after every conv: the fold changes its weights) gives the plain model's map to float
    rounding through the folded channels-last copy, and keeps the fast path."""
    torch.manual_seed(0)
    model = build_model("deeplabv3_mobilenet_v3_large", pretrained=False, input_size=SIZE).eval()
    x = torch.rand(1, 3, SIZE, SIZE)
    target = targets.SegmentationRegion(5, torch.ones(SIZE, SIZE))
    maps = {}
    for fast in (True, False):
        with cams.ScoreCAM(model, "backbone_out", fast=fast, relu=False, reshape=lambda a: a[:, :8]) as method:
            assert method.fast == fast
            maps[fast] = method.attribute(x, target, upsample_to_input=False)
    assert maps[False].abs().max() > 0
    torch.testing.assert_close(maps[True], maps[False], atol=1e-5 * float(maps[False].abs().max()), rtol=1e-4)
