"""cnnvis.plotting.filters reads the Fig. 3 filters from the conv1 ablation's AlexNet-style checkpoint."""

import torch

from cnnvis.ablations import conv1_variant
from cnnvis.plotting.filters import trained_conv1


def test_trained_conv1_takes_the_lowest_seed_checkpoints_11x11_filters(tmp_path):
    for seed in (1, 0):
        torch.manual_seed(seed)
        model = conv1_variant("alexnet_conv1", 4, 112, 0.25)
        run = tmp_path / f"zfnet-alexnet-conv1_caltech101-{seed}abc"
        run.mkdir()
        torch.save({"model": model.state_dict(), "seed": seed, "epoch": 30}, run / "last.pt")
        if seed == 0:
            expected = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d)).weight
    weight, info = trained_conv1(str(tmp_path / "zfnet-alexnet-conv1_caltech101-*/last.pt"))
    assert weight.shape[-2:] == (11, 11) and weight.shape[1] == 3
    assert torch.equal(weight, expected) and info["seed"] == 0 and info["epochs"] == 30
    assert trained_conv1(str(tmp_path / "nothing-*/last.pt")) is None
