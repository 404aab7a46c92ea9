"""The layout check (cnnvis.plotting.layout) finds each kind of problem on a figure built to have it, and
nothing on the same figure laid out properly."""

import json

import matplotlib.pyplot as plt
import numpy as np
import pytest

from cnnvis.plotting.layout import layout_problems
from cnnvis.results import LAYOUT_FILE, Results


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def test_a_title_over_the_axes_above_overlaps_and_tight_layout_fixes_it():
    fig, axs = plt.subplots(2, 1, figsize=(4, 3))
    axs[0].set_xlabel("a long x label here")
    axs[1].set_title("title of the second axes")
    assert any("overlap" in p and "title of the second axes" in p for p in layout_problems(fig))
    fig.tight_layout()
    assert layout_problems(fig) == []


def test_the_layout_is_checked_once_settled_as_savefig_draws_it():
    import torch

    from cnnvis.plotting.activation_max import unit_grid

    # the activation_max sweep's class row: constrained layout's first pass leaves the captions under the suptitle
    captions = [f"{name}\nscore 80.3\ntop-1: = target" for name in ("goldfish", "flamingo", "lion", "balloon")]
    fig = unit_grid({"classes\nlucid_pixel": (torch.rand(4, 3, 32, 32), captions)},
                    "efficientnet_lite0: class images maximizing the pre-softmax score, lucid_pixel above lucid_pixel; "
                    "top-1 of the model on each")
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    title = fig.axes[0].title
    assert fig._suptitle.get_window_extent(renderer).y0 < title.get_window_extent(renderer).y1  # first pass
    assert layout_problems(fig) == []
    settled = title.get_window_extent(renderer).extents
    fig.canvas.draw()
    assert np.allclose(title.get_window_extent(fig.canvas.get_renderer()).extents, settled)


def test_small_text_is_found():
    fig, ax = plt.subplots(figsize=(4, 3))
    ax.set_xlabel("tiny", fontsize=5)
    assert layout_problems(fig) == ["text smaller than 6 pt (5.0 pt): 'tiny'"]


def test_text_cut_by_its_clip_box_is_found():
    fig, ax = plt.subplots(figsize=(4, 3))
    ax.text(0.95, 0.5, "runs past the right edge", transform=ax.transAxes, clip_on=True)
    assert layout_problems(fig) == ["text cut by its clip box: 'runs past the right edge'"]


@pytest.mark.parametrize("plot", ["line", "bars", "errorbar", "band", "scatter"])
def test_a_legend_over_data_is_found_and_one_beside_it_is_not(plot):
    x = np.linspace(0, 1, 20)
    for loc, covered in (("center", True), ("upper left", False)):  # the data sit in the middle
        fig, ax = plt.subplots(figsize=(4, 3))
        if plot == "line":
            ax.plot(x, 0.5 + 0 * x, label="flat line")
        elif plot == "bars":
            ax.bar([0.3, 0.5, 0.7], [0.6, 0.6, 0.6], width=0.2, label="bars")
        elif plot == "errorbar":
            ax.errorbar([0.5], [0.5], yerr=[0.3], fmt="none", label="interval")
        elif plot == "band":
            ax.fill_between(x, 0.4, 0.6, label="band")
        else:
            ax.scatter([0.5], [0.5], label="point")
        ax.plot([0, 1], [0, 0], color="k")
        ax.set(xlim=(0, 1), ylim=(0, 1))
        ax.legend(loc=loc)
        found = [p for p in layout_problems(fig) if p.startswith("legend covers")]
        assert bool(found) == covered, (plot, loc, found)
        plt.close(fig)


def test_results_record_each_figures_problems(tmp_path):
    out = Results(tmp_path)
    fig, ax = plt.subplots(figsize=(4, 3))
    ax.set_title("fine")
    out.figure(fig, "clean")
    assert not (tmp_path / LAYOUT_FILE).exists()
    fig, ax = plt.subplots(figsize=(4, 3))
    ax.set_xlabel("tiny", fontsize=4)
    out.figure(fig, "small")
    assert json.loads((tmp_path / LAYOUT_FILE).read_text()) == {"small.png": ["text smaller than 6 pt (4.0 pt): 'tiny'"]}


def test_a_legend_beside_the_axes_covers_nothing_even_over_clipped_data():
    from cnnvis.plotting import legend_outside

    fig, ax = plt.subplots(figsize=(4, 3))
    ax.plot([0, 2], [0.5, 0.5], label="runs past the right edge")  # clipped at x = 1, under where the legend sits
    ax.set(xlim=(0, 1), ylim=(0, 1))
    legend_outside(ax)
    assert layout_problems(fig) == []


def test_training_curves_leave_room_for_a_two_line_title():
    import pandas as pd

    from cnnvis.plotting.training import training_curves

    h = pd.DataFrame({"epoch": [1, 2, 3], "train_loss": [2, 1, .5], "val_loss": [2, 1.2, .9],
                      "train_top1": [.2, .5, .8], "val_top1": [.2, .4, .6]})
    title = "Training zfnet on caltech101 (10 classes)\nUNDERTRAINED (not comparable): 2 epoch(s), fewer than 6"
    assert layout_problems(training_curves({"zfnet": h}, title)) == []


def test_grids_of_images_leave_room_for_a_title_of_several_lines():
    import torch

    from cnnvis.plotting.deconv import top9_figure
    from cnnvis.plotting.training import filter_change_grid, projection_rows

    title = "a title of three lines, as an undertrained run's figure has\nsecond line\nUNDERTRAINED (not comparable): x"
    tile = lambda: np.random.default_rng(0).random((24, 24, 3))  # noqa: E731
    maps = [{"channel": i, "projections": [tile()] * 9, "patches": [tile()] * 9} for i in range(4)]
    assert layout_problems(top9_figure(maps, title)) == []
    weights = {"small_conv1_init, AlexNet conv1 11x11/4 (seed 0, 100 epochs)":  # the recipe search's longest label
               {"W": torch.randn(24, 3, 11, 11), "W - W0": torch.randn(24, 3, 11, 11)},
               "ZFNet conv1 7x7/2": {"W": torch.randn(24, 3, 7, 7), "W - W0": torch.randn(24, 3, 7, 7)}}
    assert layout_problems(filter_change_grid(weights, title)) == []
    rows = {"AlexNet conv1 11x11/4": [torch.rand(3, 20, 20)] * 6, "ZFNet conv1 7x7/2": [torch.rand(3, 20, 20)] * 6}
    assert layout_problems(projection_rows(rows, title)) == []


def test_fig7_panel_titles_wrap_to_their_panel_and_leave_each_other_room():
    import torch

    from cnnvis.occlusion import OcclusionMaps
    from cnnvis.plotting.occlusion import occlusion_figure

    grid = torch.rand(16, 16)
    maps = OcclusionMaps(activation=grid * 100, probability=grid, top_class=(grid * 3).long(), ys=torch.arange(16) * 12,
                         xs=torch.arange(16) * 12, size=48, stride=12, layer="head", channel=1228, target=0,
                         clean_activation=131.4, clean_probability=0.294, clean_top_class=0)
    image, projection = torch.rand(3, 224, 224), torch.randn(3, 224, 224)
    # the method label of the canonical run whose (b) and (c) titles ran into each other
    method = "guided backprop (no max-pool switches in efficientnet_lite0)"
    fig = occlusion_figure(image, maps, ["Afghan hound", "Border collie", "Old English sheepdog"], 0, (0.5, 0.5, 0.5),
                           projection, [torch.randn(3, 40, 40)] * 9, method, title="a title")
    assert layout_problems(fig) == []


def stamps(fig) -> list[str]:
    return [t.get_text() for ax in fig.axes for t in ax.texts]


def test_each_re_initialized_cascade_panel_is_stamped_random_with_its_raw_maximum():
    from cnnvis.plotting.sanity import cascade_grid

    rng = np.random.default_rng(0)
    trained, random = rng.random((8, 8)), 1e-4 * rng.random((8, 8))
    fig = cascade_grid(rng.random((8, 8, 3)), {"gradient": [trained, random, random]}, ["trained", "fc", "conv5"],
                       "cascade")
    found = stamps(fig)
    assert found[0] == f"raw max {trained.max():.2g}"  # the trained map: its own scale, no stamp
    assert found[1:] == [f"random weights\nraw max {random.max():.2g}"] * 2
    assert layout_problems(fig) == []


def test_a_long_cascade_title_wraps_inside_the_grid_s_width():
    from cnnvis.plotting.sanity import cascade_grid, similarity_curves

    rng = np.random.default_rng(0)
    steps = ["trained", *[f"block{i}" for i in range(10)]]
    title = "efficientnet_lite0 (ImageNet weights), 32 ImageNet validation images: maps " * 3  # ~230 characters
    grid = cascade_grid(rng.random((8, 8, 3)), {"gradient": [rng.random((8, 8))] * len(steps)}, steps, title)
    curves = similarity_curves({"gradient": {"ssim": [rng.random(4)] * len(steps)}}, steps, {"ssim": "SSIM"}, title)
    for fig in (grid, curves):
        fig.canvas.draw()
        # one unwrapped line made the saved cascade figure twice its grid's width, the grid beside white space
        assert fig.get_tightbbox().width <= fig.get_figwidth() + 0.05
        assert layout_problems(fig) == []


def test_only_the_random_weights_models_columns_are_stamped():
    import torch

    from cnnvis.plotting.cam_beyond import MapColumn, model_grid

    maps = torch.rand(2, 16, 16)
    columns = [MapColumn("trained model", maps, ["a", "b"]), MapColumn("random model", 3 * maps, ["a", "b"],
                                                                       random_weights=True)]
    fig = model_grid(torch.rand(2, 3, 16, 16), columns, "title")
    assert stamps(fig) == [f"random weights\nraw max {3 * float(m.max()):.2g}" for m in maps]
    assert layout_problems(fig) == []
