"""cnnvis.localization's map scores against Quantus 0.6.0, an independent implementation, on the same model,
maps and settings: deletion / insertion curves (RISE) vs PixelFlipping, their patch-wise form vs Selectivity and
RegionPerturbation, the curves' AUC vs Quantus's, and the pointing game vs PointingGame.

Quantus's defaults differ from ours, so each test sets them to ours and says what differs:
- perturb_baseline: Quantus's "black" is each image's minimum value, ours is 0 (RISE's deletion): we pass 0.0.
- normalise: Quantus divides each map by its largest absolute value by default; a positive scale keeps the
  ranking, but we turn it (and abs) off so that Quantus ranks the very values ours does.
- Quantus's curves start after the first step; ours include the unperturbed image as point 0.
- Quantus's PixelFlipping broadcasts a per-pixel map over the C channels and flips ``features_in_step`` of
  the C * H * W features per step, but demands that this divides H * W; ours flips round(k * H * W / steps)
  pixels by step k. A step of H * W / steps pixels is 3 * H * W / steps features, which divides H * W when
  ``steps`` is a multiple of 3 and divides H * W (12 steps here).
- Ties: ours breaks them in row-major order (a stable sort), Quantus's np.argsort(-a) in no defined order, so
  the maps compared have no tied values (asserted, or broken in our order by ``break_ties``).
Insertion, Average Drop and Increase in Confidence have no Quantus metric; insertion runs through
PixelFlipping with a perturbation function that copies the image into its blurred copy (the blur is ours in
both, so that test checks the order and the copying, not the blur).
"""

import numpy as np
import pytest
import torch
from torch import nn

from cnnvis import localization as loc
from conftest import DATA_ROOT, needs_caltech101, needs_imagenet_val

quantus = pytest.importorskip("quantus", reason="quantus not installed (pip install -r requirements.txt)")

SIZE, STEPS, PATCH = 24, 12, 6  # 576 pixels: 48 per deletion step; 16 patches of 6 x 6
ATOL = 1e-5  # float32 forward passes of differently composed batches


def tiny_cnn() -> nn.Module:
    """A random 5-class CNN whose class probabilities move when pixels are flipped (weights scaled up)."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5))
    with torch.no_grad():
        for layer, scale in ((net[0], 4), (net[2], 4), (net[-1], 5)):
            layer.weight.mul_(scale)
    return net.eval()


def random_batch(n: int = 4, size: int = SIZE):
    g = torch.Generator().manual_seed(1)
    x = torch.rand(n, 3, size, size, generator=g)
    maps = torch.rand(n, size, size, generator=g)
    return x, maps, torch.arange(n) % 5


def assert_no_ties(maps: torch.Tensor):
    assert all(len(torch.unique(m)) == m.numel() for m in maps), "tied map values: the two orders may differ"


def break_ties(maps: torch.Tensor) -> torch.Tensor:
    """The maps in float64 plus a ramp, falling in row-major order, below the smallest gap between distinct values:
    no ties, and the order ours gives the original maps."""
    flat = maps.double().flatten(1)
    n = flat.shape[1]
    ramp = torch.arange(n, 0, -1, dtype=torch.float64) / (n + 1)
    gaps = torch.stack([torch.unique(m).diff().min() for m in flat])
    return (flat + gaps[:, None] * ramp).view_as(maps)


def our_curves(model, x, maps, targets, mode, steps=STEPS) -> np.ndarray:
    return torch.stack([loc.causal_curve(model, x[i], maps[i], int(targets[i]), mode, steps)
                        for i in range(len(x))]).double().numpy()


def numpy_args(x, maps, targets):
    """Quantus's inputs: (N, C, H, W) images, (N,) labels and (N, 1, H, W) maps, as float32 / int arrays."""
    return dict(x_batch=x.numpy(), y_batch=targets.numpy(), a_batch=maps[:, None].numpy(),
                channel_first=True, softmax=True, device="cpu")


def pixel_flipping(steps, height, width, **kwargs):
    return quantus.PixelFlipping(features_in_step=3 * height * width // steps, perturb_baseline=0.0,
                                 normalise=False, abs=False, disable_warnings=True, **kwargs)


def copy_from(arr, indices, source, **kwargs):
    """Quantus perturbation function for insertion: the features at ``indices`` take ``source``'s values."""
    rows = np.arange(len(arr))[:, None]
    out = arr.copy()
    out[rows, indices] = source.reshape(len(arr), -1)[rows, indices]
    return out


def quantus_insertion(model, x, maps, targets, steps):
    """RISE insertion through PixelFlipping: start from the blurred images, copy the originals in."""
    canvas = loc.blurred(x)
    metric = pixel_flipping(steps, *x.shape[-2:], perturb_func=copy_from,
                            perturb_func_kwargs={"source": x.numpy()})
    args = numpy_args(canvas, maps, targets)
    return np.asarray(metric(model, batch_size=len(x), **args))


def quantus_deletion(model, x, maps, targets, steps):
    return np.asarray(pixel_flipping(steps, *x.shape[-2:])(model, batch_size=len(x), **numpy_args(x, maps, targets)))


def assert_curves_move(curves: np.ndarray):
    assert np.ptp(curves, axis=1).min() > 0.02, "flat curves: any two implementations would agree"


def test_deletion_curve_equals_quantus_pixel_flipping():
    model, (x, maps, targets) = tiny_cnn(), random_batch()
    assert_no_ties(maps)
    ours = our_curves(model, x, maps, targets, "deletion")
    assert_curves_move(ours)
    np.testing.assert_allclose(ours[:, 1:], quantus_deletion(model, x, maps, targets, STEPS), atol=ATOL)


def test_insertion_curve_equals_quantus_pixel_flipping_from_the_blurred_image():
    model, (x, maps, targets) = tiny_cnn(), random_batch()
    ours = our_curves(model, x, maps, targets, "insertion")
    assert_curves_move(ours)
    np.testing.assert_allclose(ours[:, 1:], quantus_insertion(model, x, maps, targets, STEPS), atol=ATOL)


def test_auc_equals_quantus_auc_plus_the_first_interval(monkeypatch):
    """Quantus's per-sample AUC is the trapezoid over its curve with unit spacing (no point 0, not scaled to
    [0, 1]); ours is over steps + 1 points scaled to [0, 1]: ours * steps = theirs + (p0 + p1) / 2.
    Quantus 0.6.0 calls np.trapz, which NumPy 2.4 removed: we alias its successor np.trapezoid."""
    monkeypatch.setattr(np, "trapz", np.trapezoid, raising=False)
    model, (x, maps, targets) = tiny_cnn(), random_batch()
    ours = our_curves(model, x, maps, targets, "deletion")
    args = numpy_args(x, maps, targets)
    theirs = np.asarray(pixel_flipping(STEPS, SIZE, SIZE, return_auc_per_sample=True)(model, **args))
    our_auc = np.array([loc.auc(torch.from_numpy(c)) for c in ours])
    np.testing.assert_allclose(our_auc * STEPS, theirs + (ours[:, 0] + ours[:, 1]) / 2, atol=ATOL * STEPS)


def patch_sums(maps: torch.Tensor, patch: int) -> torch.Tensor:
    """Each pixel gets its patch's summed map value: our pixel order then deletes whole patches in Quantus's
    patch order (patch sums, descending)."""
    summed = nn.functional.avg_pool2d(maps[:, None], patch)[:, 0] * patch ** 2
    return summed.repeat_interleave(patch, 1).repeat_interleave(patch, 2)


def test_patchwise_deletion_equals_quantus_selectivity_and_region_perturbation():
    """Selectivity (Montavon et al. 2018) and RegionPerturbation (Samek et al. 2015, most relevant first) delete
    non-overlapping patches in the order of their summed map; Selectivity reports the probability after each
    patch, RegionPerturbation the drop from the unperturbed image. Ours on the patch-summed map, one patch per
    step, is the same curve."""
    model, (x, maps, targets) = tiny_cnn(), random_batch()
    n_patches = (SIZE // PATCH) ** 2
    blocks = patch_sums(maps, PATCH)
    assert_no_ties(blocks[:, ::PATCH, ::PATCH])
    ours = our_curves(model, x, blocks, targets, "deletion", steps=n_patches)
    assert_curves_move(ours)
    settings = dict(patch_size=PATCH, perturb_baseline=0.0, normalise=False, abs=False, disable_warnings=True)
    args = numpy_args(x, maps, targets)
    selectivity = np.asarray(quantus.Selectivity(**settings)(model, **args))
    region_perturbation = quantus.RegionPerturbation(regions_evaluation=n_patches, order="morf", **settings)
    region = np.asarray(region_perturbation(model, **args))
    np.testing.assert_allclose(ours[:, 1:], selectivity, atol=ATOL)
    np.testing.assert_allclose(ours[:, :1] - ours[:, 1:], region, atol=ATOL)


def tolerance_mask(box, tolerance: float, height: int, width: int) -> np.ndarray:
    """The pixels whose centre lies within ``tolerance`` of the box: the region our pointing game accepts,
    as the segmentation mask Quantus's PointingGame (which has no tolerance) takes."""
    ys, xs = np.mgrid[:height, :width] + 0.5
    dx = np.maximum(np.maximum(box[0] - xs, 0), xs - box[2])
    dy = np.maximum(np.maximum(box[1] - ys, 0), ys - box[3])
    return np.hypot(dx, dy) <= tolerance


def quantus_pointing(maps: np.ndarray, boxes, tolerance: float) -> np.ndarray:
    """Quantus's PointingGame: a hit when a maximum of the map lies in the mask (it never calls the model)."""
    n, h, w = maps.shape
    masks = np.stack([tolerance_mask(b, tolerance, h, w) for b in boxes])[:, None].astype(np.float32)
    metric = quantus.PointingGame(normalise=False, abs=False, disable_warnings=True)
    x = np.zeros((n, 3, h, w), dtype=np.float32)
    return np.asarray(metric(nn.Identity().eval(), x_batch=x, y_batch=np.zeros(n, dtype=int), a_batch=maps[:, None],
                             s_batch=masks, channel_first=True, device="cpu"), dtype=bool)


@pytest.mark.parametrize("tolerance", [0.0, 3.0])
def test_pointing_game_equals_quantus_on_the_tolerance_mask(tolerance):
    rng = np.random.default_rng(0)
    maps = rng.random((40, 24, 24)).astype(np.float32)
    corners = rng.integers(0, 16, (40, 2))
    boxes = np.concatenate([corners, corners + rng.integers(3, 9, (40, 2))], 1).astype(float)
    ours = np.array([loc.pointing_hit(m, b, tolerance) for m, b in zip(maps, boxes)])
    theirs = quantus_pointing(maps, boxes, tolerance)
    assert 0 < ours.sum() < len(ours), "all hits or all misses: the test cannot tell the two apart"
    np.testing.assert_array_equal(ours, theirs)


def test_pointing_game_on_tied_maxima_differs_from_quantus():
    """The one difference: on tied maxima ours points at the first (row-major) pixel, Quantus counts a hit if
    any of them is in the mask."""
    tied, box = np.zeros((1, 24, 24), dtype=np.float32), [10.0, 10.0, 14.0, 14.0]
    tied[0, 0, 0] = tied[0, 12, 12] = 1.0  # first: far outside the box; second: inside it
    assert not loc.pointing_hit(tied[0], box, 0.0)
    assert quantus_pointing(tied, [box], 0.0)[0]


# Real data: ImageNet-trained EfficientNet-Lite0 on real photos, saliency / Grad-CAM maps of its top class.

REAL_SIZE, REAL_STEPS = 96, 12
REAL_TOLERANCE = 6.0  # the papers' 15 px at 224, scaled to 96


@pytest.fixture(scope="module")
def lite0():
    from cnnvis.models import build_model

    return build_model("efficientnet_lite0", pretrained=True, input_size=REAL_SIZE).eval()


def top_class(model, x) -> torch.Tensor:
    with torch.no_grad():
        return model(x).argmax(1)


@pytest.mark.real_data
@needs_imagenet_val
def test_deletion_and_insertion_equal_quantus_on_efficientnet_lite0(lite0):
    """Three ImageNet validation photos and their saliency maps (Grad-CAM's upsampled maps have tied plateaus
    that ``break_ties`` would order for both, leaving less of Quantus's sort to check)."""
    from cnnvis.cams import Saliency
    from cnnvis.data import index_imagenet_val, load_image

    index = index_imagenet_val(DATA_ROOT / "imagenet-val-1300")
    x = torch.cat([load_image(p, REAL_SIZE) for p in index.paths[:3]])
    targets = top_class(lite0, x)
    with Saliency(lite0) as method:
        maps = break_ties(method.attribute(x, targets).detach())
    assert_no_ties(maps)
    for mode, theirs in (("deletion", quantus_deletion), ("insertion", quantus_insertion)):
        ours = our_curves(lite0, x, maps, targets, mode, REAL_STEPS)
        assert_curves_move(ours)
        np.testing.assert_allclose(ours[:, 1:], theirs(lite0, x, maps, targets, REAL_STEPS), atol=ATOL)


@pytest.mark.real_data
@needs_caltech101
def test_pointing_game_equals_quantus_on_caltech101_boxes(lite0):
    """Eight boxed Caltech-101 photos stretched to 96 x 96 (boxes scaled with them), Grad-CAM maps at Lite0's
    head. Bilinear upsampling can leave tied maxima (2 x 2 at an inner peak, a plateau at the border): there a
    hit of ours (the first tied pixel) implies Quantus's (any tied pixel); with our pixel raised above the rest
    the two agree exactly."""
    from PIL import Image

    from cnnvis.cams import GradCAM
    from cnnvis.data import caltech101_boxes, index_caltech101, load_image

    index = index_caltech101(str(DATA_ROOT))
    boxes = caltech101_boxes(index, str(DATA_ROOT))
    paths = sorted(boxes)[::len(boxes) // 8][:8]
    x = torch.cat([load_image(p, REAL_SIZE, "stretch") for p in paths])
    gt = [boxes[p] * REAL_SIZE / np.array(Image.open(p).size * 2, dtype=float) for p in paths]  # (W, H, W, H)
    with GradCAM(lite0, "head") as method:
        maps = method.attribute(x, top_class(lite0, x)).detach().numpy()
    ours = np.array([loc.pointing_hit(m, b, REAL_TOLERANCE) for m, b in zip(maps, gt)])
    assert 0 < ours.sum() < len(ours), "all hits or all misses: the test cannot tell the two apart"
    assert not (ours & ~quantus_pointing(maps, gt, REAL_TOLERANCE)).any()
    raised = maps.copy()
    for m in raised:
        m.flat[np.argmax(m)] += 1e-3 * np.ptp(m)
    np.testing.assert_array_equal(ours, quantus_pointing(raised, gt, REAL_TOLERANCE))
