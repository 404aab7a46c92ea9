"""The batched occlusion engine against a naive loop and against networks whose answer is known by construction."""

import json
import os

import pandas as pd
import pytest
import torch
from torch import nn

from cnnvis.hooks import activations
from cnnvis.models import ImageClassifier, Normalize
from cnnvis.occlusion import occlusion_map, occluder_positions
from conftest import needs_caltech101, needs_imagenet_val, run_py


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
    prob, top = torch.zeros_like(act), torch.zeros_like(act, dtype=torch.long)
    for i, y in enumerate(ys.tolist()):
        for j, x in enumerate(xs.tolist()):
            occluded = image.clone()
            occluded[:, y:y + size, x:x + size] = fill.view(3, 1, 1)
            with torch.no_grad():
                logits = model(occluded[None])[0]
            act[i, j] = activations(model, occluded[None], [layer])[layer][0, channel].sum()
            prob[i, j] = logits.softmax(0)[target]
            top[i, j] = logits.argmax()
    return act, prob, top


def test_batched_map_equals_a_naive_loop():
    model = tiny_net()
    image = torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(1))
    fill = torch.tensor([0.4, 0.5, 0.6])
    maps = occlusion_map(model, image, layer="conv2", channel=3, target=2, size=8, stride=3, batch_size=5, fill=fill)
    act, prob, top = naive_maps(model, image, "conv2", 3, 2, 8, 3, fill)
    assert maps.activation.shape == (9, 9)
    torch.testing.assert_close(maps.activation, act, atol=1e-5, rtol=0)
    torch.testing.assert_close(maps.probability, prob, atol=1e-5, rtol=0)
    assert torch.equal(maps.top_class, top)
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
    assert (maps.activation[outside] == maps.clean_activation).all()
    assert (maps.probability[outside] == maps.clean_probability).all()
    assert (maps.top_class[outside] == maps.clean_top_class).all()
    # and the quadrant it does see matters: the test can fail
    assert (maps.activation[inside] != maps.clean_activation).all()


def test_most_probable_class_map_is_the_argmax_of_the_probability_maps():
    model = tiny_net(classes=5, seed=4)
    image = torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():  # all logits tie on the clean image, so each occluder position picks its own winner
        pooled = model.pool(model.features(model.normalize(image[None])))
        model.classifier.bias.copy_(-(pooled @ model.classifier.weight.T)[0])
    probs = torch.stack([occlusion_map(model, image, target=c, size=10, stride=2, batch_size=32, fill=0).probability
                         for c in range(5)])
    maps = occlusion_map(model, image, size=10, stride=2, fill=0)
    assert torch.equal(maps.top_class, probs.argmax(0))
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
