"""Top-k mining equals a brute-force sort over all activations; memory stays channels x k."""

import numpy as np
import pytest
import torch
from torch import nn

from cnnvis.data import ImageSet
from cnnvis.mining import top_activations


def tiny_net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 5, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(5, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3)).eval()


def brute_force(acts: torch.Tensor, k: int):
    """Every activation of every image, sorted per channel; the first k entries from distinct images."""
    n, c, h, w = acts.shape
    out = []
    for ch in range(c):
        entries = sorted(((acts[i, ch, y, x].item(), i, y, x) for i in range(n) for y in range(h) for x in range(w)),
                         key=lambda e: -e[0])
        picked, seen = [], set()
        for e in entries:
            if e[1] not in seen:
                seen.add(e[1])
                picked.append(e)
            if len(picked) == k:
                break
        out.append(picked)
    return out


@pytest.mark.parametrize("batch_size", [3, 16])
def test_equals_brute_force_sort(batch_size):
    net = tiny_net()
    x = torch.rand(11, 3, 12, 12)
    layers = ["1", "3", "6"]  # relu (ties at 0), a signed conv, a fully connected layer
    top = top_activations(net, x, layers, k=4, batch_size=batch_size, progress=False)
    with torch.no_grad():
        full = {"1": net[:2](x), "3": net[:4](x), "6": net(x)[:, :, None, None]}
    for name in layers:
        expected = brute_force(full[name], 4)
        t = top[name]
        assert t.values.shape == (full[name].shape[1], 4)
        for ch, picked in enumerate(expected):
            assert torch.allclose(t.values[ch], torch.tensor([e[0] for e in picked]))
            for rank, (value, i, y, xx) in enumerate(picked):
                unique = ((t.values[ch] - value).abs() < 1e-5).sum() == 1 and value != 0  # ties come in any order
                if unique:
                    assert t.location(ch, rank) == (i, y, xx)
                assert torch.isclose(full[name][t.image_index[ch, rank], ch, t.y[ch, rank], t.x[ch, rank]], t.values[ch, rank])


def test_image_set_input_and_small_datasets():
    net = tiny_net()
    rng = np.random.default_rng(0)
    images = ImageSet("toy", rng.integers(0, 255, (5, 16, 16, 3), dtype=np.uint8), np.zeros(5, dtype=np.int64),
                      ["a"], [f"{i}.jpg" for i in range(5)], np.full((5, 2), 16))
    top = top_activations(net, images, "3", k=9, batch_size=2, size=12, progress=False)["3"]
    assert top.values.shape == (4, 5)  # k capped at the number of images
    assert sorted(top.image_index[0].tolist()) == list(range(5))  # one entry per image
    direct = top_activations(net, images.tensors(None, 12), "3", k=9, progress=False)["3"]
    # batches of 2 against all 5 at once: the conv kernels may sum in another order, so values agree to rounding
    torch.testing.assert_close(top.values, direct.values, atol=1e-6, rtol=1e-5)
    gaps = top.values.diff(dim=1).abs() > 1e-5  # near-ties may swap places, so ranks are compared only where separated
    separated = torch.cat([gaps[:, :1], gaps[:, 1:] & gaps[:, :-1], gaps[:, -1:]], dim=1)
    assert separated.any() and torch.equal(top.image_index[separated], direct.image_index[separated])
    with pytest.raises(KeyError, match="(?i)valid layer names"):
        top_activations(net, images, "conv9")


def test_the_forward_pass_stops_at_the_deepest_layer():
    net = tiny_net()
    calls = []
    net[6].register_forward_hook(lambda *a: calls.append(1))
    top_activations(net, torch.rand(4, 3, 12, 12), ["1", "3"], k=2, progress=False)
    assert calls == []


def test_rcnn_patches_end_to_end(tmp_path):
    from conftest import run_py

    result = run_py("experiment=rcnn_patches", "smoke=true", "dataset=samples", "experiment.k=4",
                    f"results_dir={tmp_path}")
    assert result.returncode == 0, result.stderr[-3000:]
    out = tmp_path / "rcnn_patches"
    assert (out / "top_patches.png").stat().st_size > 1000
    units = (out / "units.csv").read_text().splitlines()
    assert len(units) == 3 and units[0].startswith("unit,top activation")
