"""Feature visualization (cnnvis.featurevis) against known answers: round trips, whitening, Lucent's colour
matrix, the diversity term's zero, and a linear unit whose optimum is known under each parametrization."""

import numpy as np
import pytest
import torch
from torch import nn

from conftest import DATA_ROOT, needs_imagenet_val
from cnnvis import featurevis as fv
from cnnvis.models import ImageClassifier


@pytest.mark.parametrize("size", [16, 17])
@pytest.mark.parametrize("fourier,decorrelate,valid", [(True, True, "sigmoid"), (True, False, "clip"),
                                                       (False, True, "sigmoid"), (False, False, "clip")])
def test_parametrization_round_trips(size, fourier, decorrelate, valid):
    image = 0.05 + 0.9 * torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    param = fv.ImageParam(2, size, fourier=fourier, decorrelate=decorrelate, valid=valid).set_image(image)
    assert torch.allclose(param(), image, atol=1e-5)


def test_fourier_scale_is_one_over_f():
    scale = fv.fourier_scale(8, 8)
    assert scale[0, 1] == pytest.approx(8.0) and scale[0, 4] == pytest.approx(2.0)  # f = 1/8, 1/2
    assert scale[0, 0] == pytest.approx(8.0)  # f = 0 floored at 1 / size


def test_decorrelation_whitens_the_covariance_it_was_built_from():
    for cov in (fv.IMAGENET_COLOR_COVARIANCE, torch.tensor([[2.0, 0.5, 0.1], [0.5, 1.0, 0.3], [0.1, 0.3, 0.5]])):
        root_inv = torch.linalg.inv(fv.color_sqrt(cov).double())
        assert torch.allclose(root_inv @ cov.double() @ root_inv.T, torch.eye(3, dtype=torch.float64), atol=1e-5)


def test_colour_square_root_matches_lucents_matrix():
    color = pytest.importorskip("lucent.optvis.param.color", reason="torch-lucent not installed (requirements.txt)")
    lucent = torch.tensor(color.color_correlation_svd_sqrt)
    ours = fv.color_sqrt(lucent @ lucent.T)
    # the same matrix up to the sign of each column (an SVD's freedom) and Lucent's two-decimal rounding
    assert torch.allclose(ours * torch.sign(ours[0]) , lucent * torch.sign(lucent[0]), atol=0.01)
    ours_n, lucent_n = fv.color_decorrelation(lucent @ lucent.T), torch.tensor(color.color_correlation_normalized)
    assert torch.allclose(ours_n.abs(), lucent_n.abs(), atol=0.02)


@pytest.mark.real_data
@needs_imagenet_val
def test_imagenet_colour_covariance_is_recomputed_from_the_data():
    from PIL import Image

    paths = sorted((DATA_ROOT / "imagenet-val-1300" / "images").iterdir())
    images = torch.stack([torch.from_numpy(np.asarray(Image.open(p).convert("RGB").resize((64, 64), Image.BILINEAR),
                                                      dtype=np.float32) / 255).permute(2, 0, 1) for p in paths])
    assert torch.allclose(fv.color_covariance(images), fv.IMAGENET_COLOR_COVARIANCE, atol=1e-4)


def test_diversity_is_zero_for_identical_images_and_positive_otherwise():
    act = torch.rand(1, 4, 5, 5).repeat(3, 1, 1, 1)
    assert torch.allclose(fv.gram_dissimilarity(act), torch.zeros(3), atol=1e-6)
    act[1] = torch.rand(4, 5, 5)
    assert (fv.gram_dissimilarity(act) > 1e-4).all()
    # groups: the two identical images form a group of their own, the odd one is alone
    assert torch.allclose(fv.gram_dissimilarity(act, groups=[0, 1, 0]), torch.zeros(3), atol=1e-6)


def test_diversity_matches_a_naive_loop():
    act = torch.randn(4, 3, 4, 4)
    grams = [a.flatten(1) @ a.flatten(1).T for a in act]
    cos = lambda a, b: float((a * b).sum() / (a.norm() * b.norm()))
    naive = [1 - np.mean([cos(grams[i], grams[j]) for j in range(4) if j != i]) for i in range(4)]
    assert np.allclose(fv.gram_dissimilarity(act).numpy(), naive, atol=1e-5)


def linear_model(weight):
    """A 1x1 conv with 3 -> 1 channels and known weights: its channel mean is weight . mean colour."""
    conv = nn.Conv2d(3, 1, 1)
    with torch.no_grad():
        conv.weight.copy_(torch.as_tensor(weight).view(1, 3, 1, 1))
        conv.bias.zero_()
    return ImageClassifier(nn.Identity(), nn.Sequential(conv), nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten()),
                           nn.Identity(), {"conv": "features.0"}).eval()


# Decorrelated colour with a sigmoid is left out: its chroma axes are short (0.2-0.35 of the luminance one), so
# the sigmoid saturates luminance first and the saturated colour takes far more steps (cosine 0.87-0.91 at 300).
@pytest.mark.parametrize("fourier,decorrelate,valid", [(False, False, "sigmoid"), (False, False, "clip"),
                                                       (True, False, "sigmoid"), (True, False, "clip"),
                                                       (False, True, "clip"), (True, True, "clip")])
def test_a_linear_unit_reaches_its_analytic_optimum(fourier, decorrelate, valid):
    # The channel mean of a 1x1 conv is w . (mean colour); in [0, 1] its optimum is the mean colour
    # 0.5 + 0.5 sign(w), so the mean colour minus grey must point along sign(w).
    weight = torch.tensor([0.8, -0.5, 0.3])
    param = fv.ImageParam(2, 16, fourier=fourier, decorrelate=decorrelate, valid=valid)
    steps = 300 if decorrelate else 100  # decorrelated: steps along the short chroma axes are 0.2-0.35 as long
    result = fv.render(linear_model(weight), fv.channel("conv", [0, 0]), param, transforms=(), steps=steps, lr=0.1)
    cosine = torch.nn.functional.cosine_similarity(result.images.mean((2, 3)) - 0.5, torch.sign(weight)[None])
    assert (cosine >= 0.99).all(), cosine


def test_objectives_pick_one_unit_per_image_and_add():
    act = torch.arange(2 * 3 * 3 * 3, dtype=torch.float32).view(2, 3, 3, 3)
    acts = {"l": act, None: torch.tensor([[1.0, 2.0], [3.0, 4.0]])}
    assert fv.channel("l", [0, 2])(acts).tolist() == [act[0, 0].mean().item(), act[1, 2].mean().item()]
    assert fv.neuron("l", [1, 0])(acts).tolist() == [act[0, 1, 1, 1].item(), act[1, 0, 1, 1].item()]
    assert fv.unit("l", [1, 0], (0, 2))(acts).tolist() == [act[0, 1, 0, 2].item(), act[1, 0, 0, 2].item()]
    assert fv.class_logit([1, 0])(acts).tolist() == [2.0, 3.0]
    v = torch.tensor([1.0, 0.0, -1.0])
    expected = [(act[b, 0] - act[b, 2]).mean().item() for b in range(2)]
    assert torch.allclose(fv.direction("l", v)(acts), torch.tensor(expected))
    both = fv.channel("l", [0, 0]) + 2 * fv.class_logit([0, 0])
    assert torch.allclose(both(acts), fv.channel("l", [0, 0])(acts) + 2 * torch.tensor([1.0, 3.0]))
    with pytest.raises(ValueError, match="one channel/class per image"):
        fv.channel("l", [0])(acts)


def test_transforms_keep_the_batch_and_change_the_size_as_lucids():
    x = torch.rand(2, 3, 32, 32)
    g = torch.Generator().manual_seed(0)
    assert fv.pad(12)(x, g).shape[-1] == 56
    assert fv.jitter(8)(x, g).shape[-1] == 25
    assert fv.random_rotate([0])(x, g).allclose(x, atol=1e-5)
    assert fv.apply_transforms(x, fv.STANDARD_TRANSFORMS, g).shape[:2] == (2, 3)


def test_spectrum_slope_of_synthetic_power_laws():
    size = 64
    f = fv.fourier_scale(size, size)  # 1/f amplitude: power 1/f^2
    g = torch.Generator().manual_seed(0)
    pink = torch.fft.irfft2(torch.complex(torch.randn(4, size, size // 2 + 1, generator=g),
                                          torch.randn(4, size, size // 2 + 1, generator=g)) * f, s=(size, size))
    assert fv.spectrum_slope(pink[:, None].expand(4, 3, size, size)).mean() == pytest.approx(-2, abs=0.15)
    white = torch.randn(4, 3, size, size, generator=g)
    assert fv.spectrum_slope(white).mean() == pytest.approx(0, abs=0.15)
