"""Fine-tuning on cached trunk outputs (cnnvis.finetune) computes what the whole network computes."""

import numpy as np
import pytest
import torch

from cnnvis.data import ImageSet
from cnnvis.finetune import CachedViews, Top, mirrored, trunk_maps
from cnnvis.models import build_model
from cnnvis.training import random_split


def test_random_split_is_disjoint_covers_everything_and_repeats():
    parts = random_split(103, [0.7, 0.15, 0.15], seed=0)
    assert [len(p) for p in parts] == [72, 15, 16]  # floor at each cut, the last part takes the rest
    assert sorted(np.concatenate(parts).tolist()) == list(range(103))
    assert all((a == b).all() for a, b in zip(parts, random_split(103, [0.7, 0.15, 0.15], seed=0)))
    assert not all((a == b).all() for a, b in zip(parts, random_split(103, [0.7, 0.15, 0.15], seed=1)))
    with pytest.raises(ValueError, match="sum to 1"):
        random_split(10, [0.5, 0.2], seed=0)


def images(folder, n=6, side=72):
    rng = np.random.default_rng(0)
    paths = [folder / f"{i}.jpg" for i in range(n)]
    for p in paths:  # the feature cache keys on the files' identity
        p.write_bytes(b"x")
    return ImageSet("toy", rng.integers(0, 255, (n, side, side, 3), dtype=np.uint8), np.arange(n) % 3,
                    ["a", "b", "c"], [str(p) for p in paths], np.full((n, 2), side))


@pytest.mark.parametrize("name, through", [("efficientnet_lite0", "stage5"), ("resnet18", "layer3")])
def test_the_top_on_cached_maps_gives_the_whole_networks_logits(name, through, tmp_path):
    torch.manual_seed(0)
    model = build_model(name, 3, pretrained=False, input_size=64).eval()
    data = images(tmp_path)
    maps = trunk_maps(model, data, through, 64, str(tmp_path), "toy")
    again = trunk_maps(model, data, through, 64, str(tmp_path), "toy")  # from the cache
    assert torch.equal(maps, again) and len(list((tmp_path / "features").glob("*.npy"))) == 1
    with torch.no_grad():
        whole = model(data.tensors(None, 64))
        top = Top(model, through).eval()(maps)
    torch.testing.assert_close(top, whole, rtol=1e-4, atol=1e-4)


def test_an_unknown_block_lists_the_valid_ones():
    model = build_model("resnet18", 3, pretrained=False, input_size=64)
    with pytest.raises(ValueError, match="layer1, layer2, layer3, layer4.*experiment.frozen_through"):
        Top(model, "layer9")


def test_views_train_on_the_centre_or_the_mirror_and_evaluate_on_the_centre(tmp_path):
    data = images(tmp_path)
    assert (mirrored(data).images == data.images[:, :, ::-1]).all()
    centre, mirror = torch.zeros(6, 2, 3, 3), torch.ones(6, 2, 3, 3)
    torch.manual_seed(0)
    drawn = {float(CachedViews(centre, mirror, data.labels, [0, 1], train=True)[0][0].mean()) for _ in range(40)}
    assert drawn == {0.0, 1.0}
    assert all(float(CachedViews(centre, mirror, data.labels, [0], train=False)[0][0].mean()) == 0 for _ in range(10))
    assert CachedViews(centre, mirror, data.labels, [4, 5])[1][1] == 2
