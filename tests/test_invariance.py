"""Fig. 5's transformations and distances, against exact hand-made transforms and a direct computation."""

import pandas as pd
import pytest
import torch
from torch import nn

from cnnvis.hooks import activations
from cnnvis.invariance import (InvarianceCurves, invariance_curves, output_not_invariant, output_stable,
                               probability_drop, quasi_linear, top_changes_less, transform, unrelated_ratio)
from cnnvis.models import ImageClassifier, Normalize
from conftest import needs_imagenet_val, run_py
from test_occlusion import tiny_net


def test_identity_transforms_leave_images_and_features_unchanged():
    model, x = tiny_net(), torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    for kind, identity in [("translate_y", 0), ("scale", 1.0), ("rotate", 0)]:
        assert torch.equal(transform(x, kind, identity, 0.5), x)
        curves = invariance_curves(model, x, [0, 1, 2], kind, [identity], ["conv1", "conv2"], fill=0.5)
        for d in curves.distances.values():
            assert (d == 0).all()


def test_translation_and_rotation_match_exact_pixel_moves():
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    fill = torch.tensor([0.1, 0.2, 0.3])
    down = fill.view(1, 3, 1, 1).expand(2, 3, 16, 16).clone()
    down[:, :, 5:] = x[:, :, :-5]
    torch.testing.assert_close(transform(x, "translate_y", 5, fill), down)
    up = fill.view(1, 3, 1, 1).expand(2, 3, 16, 16).clone()
    up[:, :, :-3] = x[:, :, 3:]
    torch.testing.assert_close(transform(x, "translate_y", -3, fill), up)
    torch.testing.assert_close(transform(x, "rotate", 90, fill), x.rot90(-1, (2, 3)))
    assert not torch.allclose(transform(x, "scale", 1.5, fill), x)
    with pytest.raises(ValueError, match="translate_y, scale, rotate"):
        transform(x, "shear", 1, fill)


def test_distances_and_probabilities_match_a_direct_computation():
    model, x = tiny_net(), torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    labels = [1, 3]
    curves = invariance_curves(model, x, labels, "rotate", [30, 60], ["conv2"], fill=0.5)
    for a, angle in enumerate([30, 60]):
        moved = transform(x, "rotate", angle, 0.5)
        f0 = activations(model, x, ["conv2"])["conv2"].flatten(1)
        f1 = activations(model, moved, ["conv2"])["conv2"].flatten(1)
        torch.testing.assert_close(curves.distances["conv2"][:, a], (f1 - f0).norm(dim=1))
        with torch.no_grad():
            p = model(moved).softmax(1)[[0, 1], labels]
        torch.testing.assert_close(curves.probability[:, a], p)
    assert (curves.distances["conv2"] > 0).all()
    torch.testing.assert_close(curves.reference_norm["conv2"], f0.norm(dim=1))


FILL = 0.5


def disc_images(n=12, side=48, offset=(0, 0), seed=0):
    """Bright discs of random colour and radius (4-6 px) on a FILL background, centred at the image centre plus
    ``offset``: every transformation of the tests keeps them inside the image."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")
    out = torch.full((n, 3, side, side), FILL)
    for i in range(n):
        radius = 4 + 2 * torch.rand(1, generator=g)
        inside = (yy - side // 2 - offset[0]) ** 2 + (xx - side // 2 - offset[1]) ** 2 <= radius ** 2
        out[i][:, inside] = (0.8 + 0.2 * torch.rand(3, 1, generator=g))
    return out


class Pixel(nn.Module):
    """Reads one fixed pixel of its input: the opposite of invariance."""

    def __init__(self, y, x):
        super().__init__()
        self.y, self.x = y, x

    def forward(self, f):
        return f[:, :, self.y, self.x]


def toy_net(top: str, at=(24, 24)):
    """layer 1 ("early"): a 1x1 conv copying the pixels; top ("late"): their global mean (``gap``, invariant to any
    move that keeps the object inside), one pixel ``at`` (``pixel``) or the layer-1 map itself (``map``); the
    classifier says class 0 the brighter that top is, relative to the background."""
    conv = nn.Conv2d(3, 3, 1, bias=False)
    conv.weight.data = torch.eye(3).view(3, 3, 1, 1)
    pool = {"gap": nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten()), "pixel": Pixel(*at),
            "map": nn.Flatten()}[top]
    scale = 300.0 if top == "gap" else 10.0  # a disc is ~3 % of the image's mean, all of one pixel's value
    head = nn.Linear(3 * (48 * 48 if top == "map" else 1), 2)
    head.weight.data.zero_()
    head.bias.data.zero_()
    if top != "map":
        head.weight.data[0] = scale
        head.bias.data[0] = -scale * 3 * FILL
    return ImageClassifier(Normalize((0.0,) * 3, (1.0,) * 3), nn.Sequential(conv), pool, head,
                           {"early": "features", "late": "pool"}, input_size=48).eval()


def curves(model, x, kind, amounts):
    return invariance_curves(model, x, [0] * len(x), kind, amounts, ["early", "late"], fill=FILL)


SHIFTS = [-12, -8, -4, 0, 4, 8, 12]


def test_top_changes_less_yes_for_a_pooled_top_no_for_an_unpooled_one():
    x = disc_images()
    pooled, unpooled = toy_net("gap"), toy_net("map")
    c = curves(pooled, x, "translate_y", SHIFTS)
    est, _, holds = top_changes_less(c, "early", "late", unrelated_ratio(pooled, x, "early", "late"), 0.5)
    assert holds and est.value < 1e-6
    c = curves(unpooled, x, "translate_y", SHIFTS)
    est, _, holds = top_changes_less(c, "early", "late", unrelated_ratio(unpooled, x, "early", "late"), 0.5)
    assert not holds and est.value == pytest.approx(1.0)


def test_output_stable_to_translation_yes_for_pooling_no_for_one_pixel():
    x = disc_images()
    assert output_stable(curves(toy_net("gap"), x, "translate_y", SHIFTS), 0.1)[1]
    est, holds = output_stable(curves(toy_net("pixel"), x, "translate_y", SHIFTS), 0.1)  # shifts of 8, 12 leave it
    assert not holds and est.value > 0.2


def test_rotation_not_invariant_yes_for_an_off_centre_pixel_no_for_pooling():
    x = disc_images(offset=(0, 12))  # an off-centre object: rotation moves it around the centre
    angles = [0, 45, 90, 135, 180, 225, 270, 315]
    est, holds = output_not_invariant(curves(toy_net("pixel", at=(24, 36)), x, "rotate", angles), 0.1)
    assert holds and est.value > 0.2
    est, holds = output_not_invariant(curves(toy_net("gap"), x, "rotate", angles), 0.1)
    assert not holds and abs(est.value) < 0.05


def hand_curve(kind, amounts, late, early=None):
    n = len(late)
    late = torch.as_tensor(late, dtype=torch.float32)
    early = late if early is None else torch.as_tensor(early, dtype=torch.float32)
    return InvarianceCurves(kind, [float(a) for a in amounts], {"late": late, "early": early},
                            {"late": torch.ones(n), "early": torch.ones(n)}, torch.ones(n, len(amounts)))


def test_quasi_linear_leaves_out_the_identity_point():
    amounts = [-60, -40, -20, 0, 20, 40, 60]
    g = torch.Generator().manual_seed(0)
    noise = 0.02 * torch.rand(20, 7, generator=g)
    line = torch.tensor([3.0, 2, 1, 0, 1, 2, 3]) + noise
    step = torch.tensor([1.0, 1, 1, 0, 1, 1, 1]) + noise  # a jump, then flat: not linear
    assert quasi_linear(hand_curve("translate_y", amounts, line, early=step), "late", "early", 0.8)[2]
    est, _, holds = quasi_linear(hand_curve("translate_y", amounts, step, early=step), "late", "early", 0.8)
    assert not holds and est.value < 0.5
    # with the identity point (0 by construction) a step still correlates with |change|; without it, r is near 0
    size = torch.tensor([abs(a) for a in amounts], dtype=torch.float32)
    assert torch.corrcoef(torch.stack([size, step.mean(0)]))[0, 1] > 0.6


def test_probability_drop_reads_the_identity_not_the_first_amount():
    c = hand_curve("translate_y", [-60, 0, 60], torch.zeros(2, 3))
    c.probability = torch.tensor([[0.2, 0.9, 0.6], [0.5, 0.5, 0.5]])
    torch.testing.assert_close(probability_drop(c), torch.tensor([0.9 - 0.4, 0.0]))
    rot = hand_curve("rotate", [0, 90, 360], torch.zeros(1, 3))
    rot.probability = torch.tensor([[0.8, 0.2, 0.8]])  # 360 degrees is the identity too: left out of the sweep
    with pytest.raises(ValueError, match="at least two amounts besides the identity"):
        probability_drop(rot)


@needs_imagenet_val
def test_zfnet_invariance_end_to_end(tmp_path):
    result = run_py("experiment=zfnet_invariance", "smoke=true", f"results_dir={tmp_path}")
    assert result.returncode == 0, result.stderr[-3000:]
    out = tmp_path / "zfnet_invariance"
    assert (out / "fig5_invariance.png").stat().st_size > 10_000
    curves = pd.read_csv(out / "invariance_curves.csv")
    assert set(curves.transformation) == {"translate_y", "scale", "rotate"}
    assert (curves[curves.amount == 1.0].query("transformation == 'scale'").stem_relative_distance < 1e-4).all()
    claims = pd.read_csv(out / "claims.csv")
    assert set(claims.verdict) <= {"reproduced", "not reproduced", "not comparable"}
    assert (claims.n > 1).any() and claims.rule.str.startswith("yes when").all()


def test_quasi_linear_says_no_when_the_first_layer_is_as_linear_as_the_top():
    amounts = [-60, -40, -20, 0, 20, 40, 60]
    g = torch.Generator().manual_seed(1)
    line = torch.tensor([3.0, 2, 1, 0, 1, 2, 3]) + 0.02 * torch.rand(20, 7, generator=g)
    other_line = torch.tensor([3.0, 2, 1, 0, 1, 2, 3]) + 0.02 * torch.rand(20, 7, generator=g)
    est, vs_early, holds = quasi_linear(hand_curve("translate_y", amounts, line, early=other_line), "late", "early", 0.8)
    assert est.above(0.8) and not holds  # r alone would have said yes
    assert vs_early.lo < 0 < vs_early.hi


def test_fig5_panels_are_lettered_as_the_papers_rows_a_to_c_and_columns_1_to_4():
    import matplotlib.pyplot as plt

    from cnnvis.invariance import InvarianceCurves
    from cnnvis.plotting.invariance import invariance_figure

    curves = [InvarianceCurves(kind, [0.0, 1.0], {"early": torch.rand(2, 2), "late": torch.rand(2, 2)},
                               {"early": torch.ones(2), "late": torch.ones(2)}, torch.rand(2, 2))
              for kind in ("translate_y", "scale", "rotate")]
    fig = invariance_figure(curves, [torch.rand(2, 3, 8, 8)] * 3, [1.0] * 3, ["x", "y"], ["early", "late"])
    titles = [ax.get_title()[:4] for ax in fig.axes]
    assert titles == [f"({r}{c})" for r in "abc" for c in "1234"], titles
    plt.close(fig)
