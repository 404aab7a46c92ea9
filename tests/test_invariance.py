"""Fig. 5's transformations and distances, against exact hand-made transforms and a direct computation."""

import pandas as pd
import pytest
import torch

from cnnvis.hooks import activations
from cnnvis.invariance import invariance_curves, transform
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


@needs_imagenet_val
def test_zfnet_invariance_end_to_end(tmp_path):
    result = run_py("experiment=zfnet_invariance", "smoke=true", f"results_dir={tmp_path}")
    assert result.returncode == 0, result.stderr[-3000:]
    out = tmp_path / "zfnet_invariance"
    assert (out / "fig5_invariance.png").stat().st_size > 10_000
    curves = pd.read_csv(out / "invariance_curves.csv")
    assert set(curves.transformation) == {"translate_y", "scale", "rotate"}
    assert (curves[curves.amount == 1.0].query("transformation == 'scale'").stem_relative_distance < 1e-4).all()
