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
