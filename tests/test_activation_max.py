"""Activation maximization: known optima on hand-built networks, each regularizer, batching, the experiment."""

import json

import pandas as pd
import pytest
import torch
from torch import nn

from cnnvis.activation_max import (PRESETS, Regularization, contrast_stretch, dataset_maxima, gaussian_blur, maximize,
                                   maximize_units_and_classes, render_units_and_classes, spread_channels,
                                   preset_lr, summary_metrics)
from cnnvis.models import ImageClassifier, Normalize
from cnnvis.objectives import channel, class_logit, objective_values, unit
from conftest import needs_imagenet_val, run_py

SIZE = 16


def linear_net(weights: torch.Tensor) -> ImageClassifier:
    """logits[k] = weights[k] . x for (K, 3, S, S) weights: a model whose units are exactly linear."""
    k = weights.shape[0]
    classifier = nn.Sequential(nn.Flatten(), nn.Linear(weights[0].numel(), k, bias=False))
    classifier[1].weight.data = weights.reshape(k, -1).clone()
    return ImageClassifier(Normalize((0, 0, 0), (1, 1, 1)), nn.Identity(), nn.Identity(), classifier,
                           {"fc": "classifier.1"}).eval()


def tiny_convnet(seed=0) -> ImageClassifier:
    torch.manual_seed(seed)
    features = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 5, 3, stride=2, padding=1),
                             nn.ReLU())
    classifier = nn.Sequential(nn.Linear(5, 4))
    return ImageClassifier(Normalize((0.5,) * 3, (0.25,) * 3), features, nn.Sequential(nn.AdaptiveAvgPool2d(1),
                           nn.Flatten()), classifier, {"conv1": "features.1", "conv2": "features.3",
                                                       "fc": "classifier.0"}).eval()


def cosine(a, b):
    return float(nn.functional.cosine_similarity(a.flatten(), b.flatten(), dim=0))


def high_frequency_energy(x: torch.Tensor) -> float:
    """Energy of the spectrum beyond a quarter of the Nyquist frequency (mean removed)."""
    spectrum = torch.fft.fft2(x - x.mean((-2, -1), keepdim=True)).abs() ** 2
    f = torch.fft.fftfreq(x.shape[-1]).abs()
    high = (f.view(-1, 1) > 0.125) | (f.view(1, -1) > 0.125)
    return float(spectrum[..., high].sum())


def test_linear_unit_under_l2_converges_to_a_positive_multiple_of_w():
    # maximize w.x - l2 ||x - m||^2  =>  x - m = w / (2 l2), inside [0, 1] for this l2
    torch.manual_seed(0)
    w = torch.randn(2, 3, SIZE, SIZE)
    model = linear_net(w)
    l2 = float(w.abs().max()) / (2 * 0.4)  # the optimum stays 0.4 from the mean at most: no clamping
    result = maximize(model, class_logit([0, 1]), size=SIZE, steps=300, lr=0.02, reg=Regularization(l2=l2))
    moved = result.images - 0.5
    for b in range(2):
        assert cosine(moved[b], w[b]) >= 0.99
        assert (moved[b] * w[b]).sum() > 0  # a positive multiple
        assert torch.allclose(moved[b], w[b] / (2 * l2), atol=0.03)


def test_images_stay_in_the_valid_range_and_an_unbounded_unit_saturates_it():
    torch.manual_seed(1)
    w = torch.randn(1, 3, SIZE, SIZE)
    start = torch.full((1, 3, SIZE, SIZE), 0.5)
    result = maximize(linear_net(w), class_logit([0]), size=SIZE, steps=100, lr=0.1, init=start)
    assert result.images.min() >= 0 and result.images.max() <= 1
    x, up = result.images[0], w[0] > 0
    assert (x[up] > 0.5).all() and (x[~up] < 0.5).all()  # a linear unit in a box: towards the corner sign(w)
    saturated = torch.where(up, x == 1, x == 0)
    assert saturated[w[0].abs() > 0.2].all() and saturated.float().mean() > 0.8


def test_class_objective_is_the_logit_not_the_probability():
    # logits (w.x, 3 w.x): the logit of class 0 rises along +w, its softmax probability along -w
    torch.manual_seed(2)
    w = torch.randn(1, 3, SIZE, SIZE)
    model = linear_net(torch.cat([w, 3 * w]))
    x = torch.rand(1, 3, SIZE, SIZE)
    assert torch.allclose(objective_values(model, x, class_logit([0])), model(x)[:, 0])
    start = torch.full((1, 3, SIZE, SIZE), 0.5)
    result = maximize(model, class_logit([0]), size=SIZE, steps=30, lr=0.02, init=start)
    assert cosine(result.images - start, w) > 0.9  # with softmax this would be close to -1
    assert result.values[0] > model(start)[0, 0] + 1


def test_blur_lowers_high_frequency_energy():
    torch.manual_seed(3)
    noise = torch.rand(1, 3, 32, 32)
    assert high_frequency_energy(gaussian_blur(noise, 1.0)) < 0.2 * high_frequency_energy(noise)
    model = tiny_convnet()
    plain = maximize(model, channel("conv2", [0, 1]), size=32, steps=20, lr=0.1, init_std=0.2)
    blurred = maximize(model, channel("conv2", [0, 1]), size=32, steps=20, lr=0.1, init_std=0.2,
                       reg=Regularization(blur_every=2, blur_sigma=1.0))
    assert high_frequency_energy(blurred.images) < 0.5 * high_frequency_energy(plain.images)


def test_decay_shrinks_the_image_towards_the_mean_by_its_scheduled_share_each_step():
    # a unit blind to its input: no gradient, so each step only the decay acts, scaled as the step is (lr's schedule)
    torch.manual_seed(4)
    start = (0.5 + 0.2 * torch.randn(1, 3, SIZE, SIZE)).clamp(0, 1)
    steps = 6
    result = maximize(linear_net(torch.zeros(1, 3, SIZE, SIZE)), class_logit([0]), size=SIZE, steps=steps,
                      reg=Regularization(decay=0.3), init=start)
    schedule = 1 - 0.9 * torch.arange(steps) / (steps - 1)
    torch.testing.assert_close(result.images - 0.5, (start - 0.5) * torch.prod(1 - 0.3 * schedule))


def test_clipping_regularizers_do_what_they_say():
    torch.manual_seed(4)
    model = tiny_convnet()
    kw = dict(size=24, steps=10, lr=0.1, init_std=0.2)
    for reg in (Regularization(norm_pct=60), Regularization(contrib_pct=60)):
        clipped = maximize(model, channel("conv2", [0, 2]), reg=reg, **kw)
        at_mean = (clipped.images == 0.5).all(1).flatten(1).float().mean(1)
        assert (at_mean >= 0.59).all()  # at least 60 % of the pixels sent back to the mean ...
        assert (at_mean < 0.9).all()  # ... and not all of them


def test_batched_units_equal_one_at_a_time():
    model = tiny_convnet()
    reg = Regularization(l2=0.01, blur_every=3, blur_sigma=0.8, norm_pct=10, contrib_pct=10, jitter=2)
    batched = maximize(model, unit("conv2", [0, 3, 4], position=(2, 5)), size=20, steps=12, reg=reg, seed=5)
    for b, ch in enumerate([0, 3, 4]):
        alone = maximize(model, unit("conv2", [ch], position=(2, 5)), size=20, steps=12, reg=reg, seed=5,
                         init=batched_init(3, 20, seed=5)[b:b + 1])
        assert torch.allclose(alone.images[0], batched.images[b], atol=1e-5)
        assert torch.allclose(alone.values[0], batched.values[b], atol=1e-5)


def batched_init(n, size, seed):
    """The start ``maximize`` draws for ``n`` units with ``seed`` (mean 0.5, std 0.02)."""
    return 0.5 + 0.02 * torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def test_unit_and_channel_objectives_read_the_right_activations():
    model = tiny_convnet()
    x = torch.rand(2, 3, 20, 20)
    act = model.features(model.normalize(x))  # conv2's rectified maps, (2, 5, 10, 10)
    assert torch.allclose(objective_values(model, x, channel("conv2", [1, 4])),
                          torch.stack([act[0, 1].mean(), act[1, 4].mean()]))
    assert torch.allclose(objective_values(model, x, unit("conv2", [1, 4])), torch.stack([act[0, 1, 5, 5],
                                                                                          act[1, 4, 5, 5]]))
    assert torch.allclose(objective_values(model, x, unit("conv2", [2, 0], (3, 7))),
                          torch.stack([act[0, 2, 3, 7], act[1, 0, 3, 7]]))


def test_dataset_maxima_match_a_naive_loop():
    model = tiny_convnet()
    images = torch.rand(7, 3, 16, 16)
    found = dataset_maxima(model, images.split(3), ["conv1", "conv2"], logits=True)
    for name, idx in [("conv1", 1), ("conv2", 3)]:
        maps = torch.stack([model.features[:idx + 1](model.normalize(x[None]))[0] for x in images])
        assert torch.allclose(found[name]["channel"], maps.mean((2, 3)).amax(0))
        assert torch.allclose(found[name]["unit"], maps.amax((0, 2, 3)))
    assert torch.allclose(found["logits"], torch.stack([model(x[None])[0] for x in images]).amax(0))


def test_bad_input_says_how_to_fix_it():
    model = tiny_convnet()
    with pytest.raises(KeyError, match="conv1, conv2, fc"):
        maximize(model, channel("conv9", [0]), size=8, steps=1)
    with pytest.raises(IndexError, match="5 channels of conv2"):
        maximize(model, channel("conv2", [5]), size=8, steps=1)
    with pytest.raises(ValueError, match="blur_sigma"):
        Regularization(blur_every=4)
    with pytest.raises(ValueError, match="eval"):
        maximize(model.train(), channel("conv2", [0]), size=8, steps=1)
    assert set(PRESETS) >= {"none", "simonyan", "yosinski1", "yosinski2", "yosinski3", "yosinski4"}


@needs_imagenet_val
def test_experiment_sweep_end_to_end_with_a_zfnet_checkpoint(tmp_path):
    from cnnvis.models import zfnet

    checkpoint = tmp_path / "zfnet.pt"
    torch.manual_seed(0)
    torch.save({"model": zfnet(num_classes=5, input_size=64).state_dict()}, checkpoint)
    result = run_py("--multirun", "experiment=activation_max", "experiment.preset=none,yosinski4,lucid", "smoke=true",
                    f"results_dir={tmp_path}", f"experiment.zfnet_checkpoint={checkpoint}",
                    "experiment.zfnet_input_size=64", f"cache_dir={tmp_path / 'cache'}")
    assert result.returncode == 0, result.stderr[-3000:]
    sweep = tmp_path / "activation_max" / "multirun-smoke"
    out = next(p.parent for p in sweep.rglob("run.json") if "preset=yosinski4" in str(p))  # the path nests
    table = pd.read_csv(out / "activation_max.csv")
    assert set(table["model"]) == {"efficientnet_lite0", "zfnet"}
    assert {"channel", "class"} <= set(table["kind"])
    assert table.loc[table["kind"] == "class", "top1_is_target"].isin([True, False]).all()
    assert table["real_max"].notna().all() and table["reached"].notna().all()
    for name in ["units_efficientnet_lite0", "classes_efficientnet_lite0", "units_zfnet", "classes_zfnet"]:
        assert (out / f"{name}.png").stat().st_size > 1000
    metrics = json.loads((out / "run.json").read_text())["metrics"]
    assert 0 <= metrics["efficientnet_lite0_class_top1_rate"] <= 1
    assert (sweep / "sweep.png").stat().st_size > 1000 and len(list(sweep.rglob("sweep_strip.png"))) == 3
    lucid = next(p.parent for p in sweep.rglob("run.json") if "preset=lucid" in str(p))
    table = pd.read_csv(lucid / "activation_max.csv")
    assert set(table["parametrization"]) == {"lucid_pixel", "lucid"} and table["spectrum_slope"].notna().all()
    for name in ["units_efficientnet_lite0", "classes_efficientnet_lite0", "diversity_efficientnet_lite0",
                 "diversity_zfnet"]:
        assert (lucid / f"{name}.png").stat().st_size > 1000


def test_spread_channels_span_the_layer_without_repeats():
    assert spread_channels(64, 6) == [0, 13, 25, 38, 50, 63]
    assert spread_channels(3, 6) == [0, 1, 2]


def test_one_models_units_and_classes_sit_beside_their_real_image_maxima():
    model = tiny_convnet()
    maxima = dataset_maxima(model, torch.rand(6, 3, 16, 16).split(3), ["conv1", "conv2"], logits=True)
    names = ["a", "b", "c", "d"]
    rows, unit_panels, (class_images, captions) = maximize_units_and_classes(
        model, "tiny", maxima, ["conv1", "conv2"], None, 2, "channel", [1, 3], names, size=16, steps=2, seed=0)
    frame = pd.DataFrame(rows)
    assert list(frame["name"]) == ["conv1[0]", "conv1[5]", "conv2[0]", "conv2[4]", "b", "d"]
    assert (frame["ratio"] == frame["reached"] / frame["real_max"]).where(frame["real_max"] > 0, True).all()
    assert frame["top1_is_target"].iloc[-2:].notna().all() and len(class_images) == len(captions) == 2
    assert list(unit_panels) == ["conv1", "conv2"]
    metrics = summary_metrics("tiny", rows, "channel")
    assert set(metrics) == {"tiny_class_top1_rate", "tiny_class_mean_score", "tiny_class_median_ratio",
                            "tiny_channel_median_ratio", "tiny_median_spectrum_slope"}
    rows, panels, diversity_panels = render_units_and_classes(
        model, "tiny", maxima, ["conv2"], [1, 2], 2, [0], names, "lucid", 16, 2, 0.05, 0, 2, 20.0)
    assert set(pd.DataFrame(rows)["parametrization"]) == {"lucid_pixel", "lucid"}
    assert list(panels) == ["conv2\nlucid_pixel", "conv2\nlucid", "classes\nlucid_pixel", "classes\nlucid"]
    assert list(diversity_panels) == ["conv2[1]", "conv2[2]"] and len(diversity_panels["conv2[1]"][0]) == 2


@pytest.mark.parametrize("preset", ["yosinski2", "yosinski4"])
def test_yosinskis_settings_2_and_4_raise_the_score_and_display_a_visible_unsaturated_image(preset):
    # setting 2's decay of 0.3 a step, held fixed while the step shrank tenfold, faded its images to grey (std 0.05);
    # setting 4's contribution clip at the common step kept no support from one step to the next
    model, objective = tiny_convnet(), class_logit([0, 1])
    start = objective_values(model, torch.full((2, 3, 32, 32), 0.5), objective)
    result = maximize(model, objective, size=32, steps=100, lr=preset_lr(preset), reg=PRESETS[preset])
    assert (result.values > start).all()
    shown, _ = contrast_stretch(result.images, (0.5, 0.5, 0.5))
    assert ((shown - 0.5).abs().flatten(1).quantile(0.99, dim=1) > 0.25).all()  # setting 4 keeps 10 % of pixels
    assert ((shown <= 0) | (shown >= 1)).float().mean() < 0.5


def test_contrast_stretch_lifts_faint_images_about_the_mean_and_leaves_strong_ones():
    mean = torch.tensor([0.4, 0.5, 0.6]).view(1, 3, 1, 1)
    faint = mean + 0.01 * torch.linspace(-1, 1, 3 * 8 * 8).view(1, 3, 8, 8)
    strong = torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(0))  # |x - mean| reaches 0.5
    shown, gains = contrast_stretch(torch.cat([faint, strong]), (0.4, 0.5, 0.6), quantile=1.0)
    assert gains[0] == pytest.approx(50, rel=1e-3) and gains[1] == 1
    assert torch.allclose(shown[0], (mean + 0.5 * torch.linspace(-1, 1, 3 * 8 * 8).view(1, 3, 8, 8)).clamp(0, 1)[0],
                          atol=1e-5)
    assert torch.equal(shown[1], strong[0])
    assert preset_lr("yosinski4") < preset_lr("yosinski1") == 0.15 and preset_lr("yosinski4", 0.3) == 0.3


def test_setting_4s_own_step_lets_the_contribution_clip_build_an_image_on_a_real_network():
    # at the common step the clip's top-10 % support moves every step and the class scores stay near 0
    from cnnvis.models import build_model

    model = build_model("efficientnet_lite0", pretrained=True).eval()
    common, own = (maximize(model, class_logit([1, 130, 291]), size=64, steps=40, lr=lr, reg=PRESETS["yosinski4"],
                            mean=(0.485, 0.456, 0.406)).values for lr in (0.15, preset_lr("yosinski4")))
    assert own.mean() > 2 * common.mean().clamp_min(1), (own, common)  # measured: 8.8 against 2.3
