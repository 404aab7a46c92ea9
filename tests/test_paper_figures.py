"""The paper figures drawn from data the experiments already have: CAM's top-5 classes (Zhou et al. 2016 Fig. 4) and
ZF Table 1 as a plot (issue 26 item 5); each shows what it says and reads cleanly."""

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import torch
from matplotlib.collections import PathCollection

from cnnvis.plotting.layout import layout_problems


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def test_cam_top5_row_has_the_image_and_one_captioned_map_per_class():
    from cnnvis.plotting.cams import class_maps_row

    captions = [f"class {k} (p = 0.{k})" for k in range(5)]
    fig = class_maps_row(torch.rand(3, 32, 32), torch.rand(5, 32, 32), captions, "CAM of the top-5 classes")
    assert [ax.get_title() for ax in fig.axes[:6]] == ["image", *captions]
    assert layout_problems(fig) == []


def test_the_class_pair_image_has_two_objects_not_two_names_of_one():
    from torch import nn

    from cnnvis.plotting.cams import class_pair_image

    class TwoDetectors(nn.Module):  # channel 0 and channel 1 of the input; class 2 is a near-synonym of class 0
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 2, 1, bias=False)
            self.fc = nn.Linear(2, 3, bias=False)
            with torch.no_grad():
                self.conv.weight.copy_(torch.eye(3)[:2, :, None, None])
                self.fc.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.9, 0.0]]))

        def forward(self, x):
            return self.fc(torch.relu(self.conv(x)).mean((2, 3)))

    x = torch.zeros(2, 3, 16, 16)
    x[:, 0, 4:8, 2:6] = 8.0  # both images: an object of class 0 on the left (logit 0.5)
    x[1, 1, 4:8, 10:14] = 7.6  # image 1 only: an object of class 1 on the right (logit 0.475)
    model = TwoDetectors().eval()
    logits = model(x).detach()
    assert logits[0].argsort(descending=True)[:2].tolist() == [0, 2]  # image 0's pair: two names of one object
    assert logits.softmax(1)[0].topk(2).values[1] > logits.softmax(1)[1].topk(2).values[1] > 0.15
    assert class_pair_image(model, x, logits, "conv", 4) == 1


def test_a_signal_with_a_few_extreme_pixels_is_not_drawn_grey():
    from cnnvis.plotting.cams import signal_image

    signal = 0.01 * torch.randn(3, 40, 40, generator=torch.Generator().manual_seed(0))
    signal[:, 0, 0] = 10.0  # one pixel 1000x the rest, as guided backprop's strongest edges are
    picture = signal_image(signal)
    assert np.median(np.abs(picture - 0.5)) > 0.1  # the rest has contrast (scaled by the maximum: ~0.0003)
    assert picture.min() >= 0 and picture.max() <= 1 and np.allclose(picture[0, 0], 1.0)
    assert np.allclose(signal_image(torch.zeros(3, 4, 4)), 0.5)


def test_table1_plot_marks_each_image_and_the_papers_values_per_layer():
    from cnnvis.correspondence import PAPER_LAYER5, PAPER_LAYER7
    from cnnvis.plotting.correspondence import table1_figure

    rng = np.random.default_rng(0)
    scores = pd.DataFrame([{"location": loc, "layer": layer, "image": i, "delta": rng.uniform(0.05, 0.2)}
                           for loc in PAPER_LAYER5 for layer in ("conv5", "fc7") for i in range(5)])
    fig = table1_figure(scores, {"layer 5": "conv5", "layer 7": "fc7"},
                        {"layer 5": PAPER_LAYER5, "layer 7": PAPER_LAYER7}, "Table 1")
    for ax, (layer, paper) in zip(fig.axes, (("conv5", PAPER_LAYER5), ("fc7", PAPER_LAYER7))):
        points = np.concatenate([c.get_offsets() for c in ax.collections if isinstance(c, PathCollection)])
        ours = scores[scores.layer == layer].delta.to_numpy()
        assert sorted(points[:, 1]) == pytest.approx(sorted([*ours, *paper.values()]))
        assert [t.get_text() for t in ax.get_xticklabels()] == ["right eye", "left eye", "nose", "random"]
    assert layout_problems(fig) == []
