"""Fig. 5's transformations and distances, against exact hand-made transforms and a direct computation, and each
answer of the Sec. 4.4 claims on toy networks and hand-made curves."""

import pandas as pd
import pytest
import torch
from torch import nn

from cnnvis.claims import CONTRADICTED, INCONCLUSIVE, NOT_COMPARABLE, REPRODUCED, UNINFORMATIVE, with_control
from cnnvis.hooks import activations
from cnnvis.invariance import (InvarianceCurves, claims, invariance_curves, output_not_invariant, output_stable,
                               probability_drop, quasi_linear, relative_probability_drop, symmetric_exception,
                               top_changes_less, transform, unrelated_ratio)
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
    with torch.no_grad():
        assert torch.equal(curves.correct, model(x).argmax(1) == torch.tensor(labels))


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
    claim = top_changes_less(c, "early", "late", unrelated_ratio(pooled, x, "early", "late"), 0.5)
    assert claim.verdict == REPRODUCED and claim.ours.startswith("late / early relative change at -4 and 4: 0.000")
    c = curves(unpooled, x, "translate_y", SHIFTS)
    claim = top_changes_less(c, "early", "late", unrelated_ratio(unpooled, x, "early", "late"), 0.5)
    assert claim.verdict == CONTRADICTED and claim.ours.startswith("late / early relative change at -4 and 4: 1.000")


def test_output_stable_to_translation_yes_for_pooling_no_for_one_pixel():
    x = disc_images()
    rotation = curves(toy_net("gap"), x, "rotate", [0, 90, 180])
    assert output_stable(curves(toy_net("gap"), x, "translate_y", SHIFTS), 0.2, rotation).verdict == REPRODUCED
    claim = output_stable(curves(toy_net("pixel"), x, "translate_y", SHIFTS), 0.2, rotation)  # 8, 12 px leave it
    assert claim.verdict == CONTRADICTED and "0 of 12 images excluded" in claim.ours


def test_rotation_not_invariant_yes_for_an_off_centre_pixel_no_for_pooling():
    x = disc_images(offset=(0, 12))  # an off-centre object: rotation moves it around the centre
    angles = [0, 45, 90, 135, 180, 225, 270, 315]
    translation = curves(toy_net("gap"), x, "translate_y", SHIFTS)
    claim = output_not_invariant(curves(toy_net("pixel", at=(24, 36)), x, "rotate", angles), 0.2, translation)
    assert claim.verdict == REPRODUCED
    assert output_not_invariant(curves(toy_net("gap"), x, "rotate", angles), 0.2, translation).verdict == CONTRADICTED


def hand_curve(kind, amounts, late, early=None, probability=None, correct=None):
    n = len(late)
    late = torch.as_tensor(late, dtype=torch.float32)
    early = late if early is None else torch.as_tensor(early, dtype=torch.float32)
    probability = torch.ones(n, len(amounts)) if probability is None else torch.as_tensor(probability)
    correct = torch.ones(n, dtype=torch.bool) if correct is None else torch.as_tensor(correct)
    return InvarianceCurves(kind, [float(a) for a in amounts], {"late": late, "early": early},
                            {"late": torch.ones(n), "early": torch.ones(n)}, probability.float(), correct)


def test_quasi_linear_leaves_out_the_identity_point():
    amounts = [-60, -40, -20, 0, 20, 40, 60]
    g = torch.Generator().manual_seed(0)
    noise = 0.02 * torch.rand(20, 7, generator=g)
    line = torch.tensor([3.0, 2, 1, 0, 1, 2, 3]) + noise
    step = torch.tensor([1.0, 1, 1, 0, 1, 1, 1]) + noise  # a jump, then flat: not linear
    linear = quasi_linear(hand_curve("translate_y", amounts, line, early=step), "late", "early", 0.8)
    assert linear.verdict == REPRODUCED
    claim = quasi_linear(hand_curve("translate_y", amounts, step, early=step), "late", "early", 0.8)
    assert claim.verdict == CONTRADICTED and claim.evidence[0].estimate().value < 0.5
    # with the identity point (0 by construction) a step still correlates with |change|; without it, r is near 0
    size = torch.tensor([abs(a) for a in amounts], dtype=torch.float32)
    assert torch.corrcoef(torch.stack([size, step.mean(0)]))[0, 1] > 0.6


def test_probability_drop_reads_the_identity_not_the_first_amount():
    c = hand_curve("translate_y", [-60, 0, 60], torch.zeros(2, 3))
    c.probability = torch.tensor([[0.2, 0.9, 0.6], [0.5, 0.5, 0.5]])
    torch.testing.assert_close(probability_drop(c), torch.tensor([0.9 - 0.4, 0.0]))
    torch.testing.assert_close(relative_probability_drop(c), torch.tensor([0.5 / 0.9, 0.0]))
    rot = hand_curve("rotate", [0, 90, 360], torch.zeros(1, 3))
    rot.probability = torch.tensor([[0.8, 0.2, 0.8]])  # 360 degrees is the identity too: left out of the sweep
    with pytest.raises(ValueError, match="at least two amounts besides the identity"):
        probability_drop(rot)


def top_change_curve(ratio, noise, n=20):
    """Hand-made curves whose late / early ratio at the smallest steps is ``ratio`` plus per-image noise."""
    jitter = torch.linspace(-noise, noise, n)[:, None]
    return hand_curve("translate_y", [-20, -10, 0, 10, 20], (ratio + jitter).expand(n, 5), early=torch.ones(n, 5))


@pytest.mark.parametrize("ratio, noise, answer", [
    (0.2, 0.02, REPRODUCED), (0.9, 0.02, CONTRADICTED), (0.5, 0.2, INCONCLUSIVE)])
def test_top_changes_less_gives_each_answer(ratio, noise, answer):
    unrelated = torch.full((20,), 2.0)
    assert top_changes_less(top_change_curve(ratio, noise), "early", "late", unrelated, 0.5).verdict == answer


def drop_curve(drops, p_identity=0.8, correct=None, kind="translate_y"):
    """Hand-made curves whose relative p(true) drop over the sweep is ``drops`` per image."""
    drops = torch.as_tensor(drops, dtype=torch.float32)
    p_moved = (p_identity * (1 - drops))[:, None].expand(len(drops), 2)
    probability = torch.cat([torch.full((len(drops), 1), p_identity), p_moved], 1)
    amounts = [0, 90, 180] if kind == "rotate" else [0, 10, 20]
    return hand_curve(kind, amounts, torch.zeros(len(drops), 3), probability=probability, correct=correct)


SPREAD = torch.linspace(-1, 1, 30)


def test_output_claims_give_each_answer_over_correct_images_only():
    rotation = drop_curve(0.6 + 0.01 * SPREAD, kind="rotate")
    assert output_stable(drop_curve(0.05 + 0.01 * SPREAD), 0.2, rotation).verdict == REPRODUCED
    assert output_stable(drop_curve(0.4 + 0.01 * SPREAD), 0.2, rotation).verdict == CONTRADICTED
    assert output_stable(drop_curve(0.2 + 0.3 * SPREAD), 0.2, rotation).verdict == INCONCLUSIVE
    # the misclassified images' large drops do not count, and the row says how many it left out
    wrong = torch.arange(30) >= 20
    claim = output_stable(drop_curve(torch.where(wrong, 0.9, 0.05 + 0.01 * SPREAD), correct=~wrong), 0.2, rotation)
    assert claim.verdict == REPRODUCED and claim.n == 20 and "10 of 30 images excluded" in claim.ours
    nothing = output_stable(drop_curve(0.05 + 0.01 * SPREAD, correct=torch.zeros(30, dtype=torch.bool)), 0.2, rotation)
    assert nothing.verdict == NOT_COMPARABLE and "none of the 30 images is correctly classified" in nothing.reason


def test_the_relative_drop_makes_a_confident_and_a_hesitant_image_alike():
    confident, hesitant = drop_curve([0.1], p_identity=0.9), drop_curve([0.1], p_identity=0.002)
    torch.testing.assert_close(relative_probability_drop(confident), relative_probability_drop(hesitant))
    assert probability_drop(hesitant) < 0.001 < probability_drop(confident)  # the absolute drop tells them apart


def test_the_symmetric_exception_over_every_image_and_inconclusive_with_one():
    rotation = drop_curve(0.6 + 0.01 * SPREAD, kind="rotate")
    assert symmetric_exception(drop_curve(0.05 + 0.01 * SPREAD, kind="rotate"), 0.2, rotation).verdict == REPRODUCED
    assert symmetric_exception(drop_curve(0.6 + 0.01 * SPREAD, kind="rotate"), 0.2, rotation).verdict == CONTRADICTED
    one = symmetric_exception(drop_curve([0.05], kind="rotate"), 0.2, rotation)
    assert one.verdict == INCONCLUSIVE and one.reason == "inconclusive (n = 1): no interval" and one.n == 1
    none = symmetric_exception(None, 0.2, rotation)
    assert none.verdict == NOT_COMPARABLE and "no image" in none.reason


def test_a_random_network_that_also_passes_makes_the_claim_uninformative():
    x = disc_images()
    sweeps = {"translate_y": SHIFTS, "scale": [1.0, 1.1, 1.2, 1.4], "rotate": [0, 90, 180, 270]}
    by = {kind: curves(toy_net("gap"), x, kind, amounts) for kind, amounts in sweeps.items()}
    unrelated = unrelated_ratio(toy_net("gap"), x, "early", "late")
    trained = claims(by, unrelated, None, "early", "late", 0.5, 0.8, 0.2)
    assert len(trained) == 9 and {REPRODUCED, CONTRADICTED, NOT_COMPARABLE} <= {c.verdict for c in trained}
    exposed = with_control(trained, trained)  # a control identical to the trained network passes what it passes
    assert [c.verdict for c in exposed] == [UNINFORMATIVE if c.verdict == REPRODUCED else c.verdict for c in trained]
    assert all(c.control != "not run" for c in exposed)


@needs_imagenet_val
def test_zfnet_invariance_end_to_end(tmp_path):
    result = run_py("experiment=zfnet_invariance", "smoke=true", f"results_dir={tmp_path}")
    assert result.returncode == 0, result.stderr[-3000:]
    out = tmp_path / "zfnet_invariance"
    assert (out / "fig5_invariance.png").stat().st_size > 10_000
    curves = pd.read_csv(out / "invariance_curves.csv")
    assert set(curves.transformation) == {"translate_y", "scale", "rotate"}
    assert (curves[curves.amount == 1.0].query("transformation == 'scale'").stem_relative_distance < 1e-4).all()
    table = pd.read_csv(out / "claims.csv")
    assert len(table) == 9 and (table.n > 1).any() and table.rule.str.startswith("reproduced when").all()
    assert table.reason.str.len().gt(0).all() and not table["random-weights control"].str.startswith("not run").any()
    assert (out / "claims_evidence.npz").is_file()


def test_quasi_linear_is_inconclusive_when_the_first_layer_is_as_linear_as_the_top():
    amounts = [-60, -40, -20, 0, 20, 40, 60]
    g = torch.Generator().manual_seed(1)
    line = torch.tensor([3.0, 2, 1, 0, 1, 2, 3]) + 0.02 * torch.rand(20, 7, generator=g)
    other_line = torch.tensor([3.0, 2, 1, 0, 1, 2, 3]) + 0.02 * torch.rand(20, 7, generator=g)
    claim = quasi_linear(hand_curve("translate_y", amounts, line, early=other_line), "late", "early", 0.8)
    r_late, vs_early = (e.estimate() for e in claim.evidence)
    assert r_late.above(0.8) and claim.verdict == INCONCLUSIVE  # r alone would have said yes
    assert vs_early.lo < 0 < vs_early.hi


def test_fig5_panels_are_lettered_as_the_papers_rows_a_to_c_and_columns_1_to_4():
    import matplotlib.pyplot as plt

    from cnnvis.invariance import InvarianceCurves
    from cnnvis.plotting.invariance import invariance_figure

    curves = [InvarianceCurves(kind, [0.0, 1.0], {"early": torch.rand(2, 2), "late": torch.rand(2, 2)},
                               {"early": torch.ones(2), "late": torch.ones(2)}, torch.rand(2, 2), torch.ones(2, dtype=bool))
              for kind in ("translate_y", "scale", "rotate")]
    fig = invariance_figure(curves, [torch.rand(2, 3, 8, 8)] * 3, [1.0] * 3, ["x", "y"], ["early", "late"])
    titles = [ax.get_title()[:4] for ax in fig.axes]
    assert titles == [f"({r}{c})" for r in "abc" for c in "1234"], titles
    plt.close(fig)
