import logging

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from cnnvis.config import DatasetConfig
from cnnvis.data import (DatasetNotFoundError, ImageFiles, ImageTensors, decode_to_cache, index_caltech101, index_dataset,
                         index_imagefolder, load_images, per_class_split)
from conftest import DATA_ROOT, needs_caltech101, needs_imagenet_val


def dataset_cfg(**kw):
    return OmegaConf.merge(OmegaConf.structured(DatasetConfig), kw)


@pytest.fixture
def folder(tmp_path):
    """A class-per-folder tree with an RGB, a grayscale, an RGBA and a corrupt image."""
    rng = np.random.default_rng(0)
    (tmp_path / "cats").mkdir()
    (tmp_path / "dogs").mkdir()
    Image.fromarray(rng.integers(0, 255, (40, 60, 3), dtype=np.uint8)).save(tmp_path / "cats" / "rgb.jpg")
    Image.fromarray(rng.integers(0, 255, (50, 30), dtype=np.uint8)).save(tmp_path / "cats" / "gray.png")
    Image.fromarray(rng.integers(0, 255, (32, 32, 4), dtype=np.uint8), "RGBA").save(tmp_path / "dogs" / "rgba.png")
    (tmp_path / "dogs" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    return tmp_path


def test_split_follows_the_protocol():
    labels = np.repeat(np.arange(5), [40, 35, 70, 31, 100])
    train, test = per_class_split(labels, train_per_class=30, test_per_class=50, fold=0, seed=0)
    assert not set(train) & set(test)
    assert all((labels[train] == y).sum() == 30 for y in range(5))
    assert [(labels[test] == y).sum() for y in range(5)] == [10, 5, 40, 1, 50]  # up to 50, rest after training
    again = per_class_split(labels, 30, 50, fold=0, seed=0)
    assert np.array_equal(again[0], train) and np.array_equal(again[1], test)
    other = per_class_split(labels, 30, 50, fold=1, seed=0)
    assert not np.array_equal(other[0], train)


def test_grayscale_and_rgba_become_rgb_and_corrupt_files_are_reported(folder, tmp_path_factory, caplog):
    index = index_imagefolder(folder)
    assert index.classes == ["cats", "dogs"] and len(index.paths) == 4
    with caplog.at_level(logging.WARNING):
        images = decode_to_cache(index, 24, "crop", str(tmp_path_factory.mktemp("cache")), num_workers=0)
    assert images.images.shape == (3, 24, 24, 3) and images.images.dtype == np.uint8
    assert [p.split("/")[-1] for p in images.skipped] == ["broken.jpg"]
    assert "broken.jpg" in caplog.text
    assert sorted(images.labels.tolist()) == [0, 0, 1]
    gray = images.images[[p.endswith("gray.png") for p in images.paths].index(True)]
    assert np.array_equal(gray[..., 0], gray[..., 1]) and np.array_equal(gray[..., 1], gray[..., 2])


def test_cache_is_reused_and_invalidated_when_the_source_or_transform_changes(folder, tmp_path):
    cache = tmp_path / "cache"
    index = index_imagefolder(folder)
    first = decode_to_cache(index, 16, "crop", str(cache), num_workers=0)
    assert len(list(cache.glob("*.npy"))) == 1
    again = decode_to_cache(index, 16, "crop", str(cache), num_workers=0)
    assert isinstance(again.images, np.memmap) and np.array_equal(first.images, again.images)
    decode_to_cache(index, 16, "stretch", str(cache), num_workers=0)
    assert len(list(cache.glob("*.npy"))) == 2
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(folder / "cats" / "rgb.jpg")
    changed = decode_to_cache(index, 16, "crop", str(cache), num_workers=0)
    assert len(list(cache.glob("*.npy"))) == 3 and not np.array_equal(changed.images, first.images)


def test_decoding_leaves_the_global_random_state_alone(folder, tmp_path):
    # else a cold cache changes what a later random initialization draws (a random-weights model's maps)
    index = index_imagefolder(folder)
    for cache in (tmp_path / "cold", tmp_path / "cold"):  # decoded, then read back
        state = torch.get_rng_state()
        images = decode_to_cache(index, 16, "crop", str(cache), num_workers=0)
        assert torch.equal(state, torch.get_rng_state())
    state = torch.get_rng_state()
    streamed = ImageFiles(index.name, index.paths, index.labels, index.classes, 16, "crop", num_workers=0).subset(
        [i for i, p in enumerate(index.paths) if "broken" not in p])  # the fixture's corrupt file is an error here
    streamed.mean_color()
    list(streamed.batches(np.arange(len(images)), 16, 2))
    assert torch.equal(state, torch.get_rng_state())


def test_missing_dataset_error_names_the_path(tmp_path):
    with pytest.raises(DatasetNotFoundError, match=r"101_ObjectCategories.*download=true.*DATA_ROOT"):
        index_caltech101(str(tmp_path))
    with pytest.raises(DatasetNotFoundError, match="imagenet-val-1300"):
        index_dataset(dataset_cfg(name="imagenet_val", root=str(tmp_path), subdir="imagenet-val-1300"))


def test_caltech256_layout(tmp_path):
    root = tmp_path / "caltech256" / "256_ObjectCategories"
    for c, name in enumerate(["001.ak47", "002.bat", "257.clutter"], start=1):
        (root / name).mkdir(parents=True)
        for i in range(1, 4):
            Image.fromarray(np.full((8, 8, 3), c * 40, np.uint8)).save(root / name / f"{c:03d}_{i:04d}.jpg")
    index = index_dataset(dataset_cfg(name="caltech256", root=str(tmp_path)))
    assert len(index.paths) == 6 and set(index.labels.tolist()) == {0, 1}
    with_clutter = index_dataset(dataset_cfg(name="caltech256", root=str(tmp_path), include_background=True))
    assert len(with_clutter.paths) == 9


def test_samples_ship_with_installed_packages(tmp_path):
    images = load_images(dataset_cfg(name="samples"), 64, str(tmp_path))
    assert len(images) == 7 and images.images.shape[1:] == (73, 73, 3)
    x = images.tensors(size=64)
    assert x.shape == (7, 3, 64, 64) and 0 <= x.min() and x.max() <= 1


def test_training_crops_and_flips():
    from cnnvis.data import ImageSet

    arr = np.random.default_rng(0).integers(0, 255, (4, 20, 20, 3), dtype=np.uint8)
    images = ImageSet("t", arr, np.arange(4), ["a"] * 4, ["p"] * 4, np.full((4, 2), 20))
    torch.manual_seed(0)
    train = ImageTensors(images, [0, 1], 16, train=True)
    x, y = train[1]
    assert x.shape == (3, 16, 16) and y == 1
    test = ImageTensors(images, [2], 16, train=False)
    assert torch.equal(test[0][0], torch.from_numpy(arr[2, 2:18, 2:18]).permute(2, 0, 1).float() / 255)


@needs_caltech101
def test_real_caltech101(tmp_path):
    index = index_dataset(dataset_cfg(name="caltech101", root=str(DATA_ROOT)))
    assert len(index.classes) == 101 and len(index.paths) == 8677
    with_bg = index_dataset(dataset_cfg(name="caltech101", root=str(DATA_ROOT), include_background=True))
    assert len(with_bg.classes) == 102 and len(with_bg.paths) == 8677 + 467
    train, test = per_class_split(index.labels, 30, 50, fold=2, seed=0)
    assert len(train) == 30 * 101 and not set(train) & set(test)


@needs_imagenet_val
def test_real_imagenet_val(tmp_path):
    index = index_dataset(dataset_cfg(name="imagenet_val", root=str(DATA_ROOT), subdir="imagenet-val-1300"))
    assert len(index.paths) == 1300 and len(set(index.labels.tolist())) == 725
    assert index.classes[259] == "Pomeranian"


@needs_caltech101
def test_real_caltech101_boxes_map_into_cached_pixels(tmp_path):
    from cnnvis.data import caltech101_boxes

    index = index_dataset(dataset_cfg(name="caltech101", root=str(DATA_ROOT)))
    boxes = caltech101_boxes(index, str(DATA_ROOT))
    assert len(boxes) == 1501 and len({p.split("/")[-2] for p in boxes}) == 24
    ant = [p for p in index.paths if p.endswith("ant/image_0001.jpg")][0]
    assert boxes[ant].tolist() == [24, 18, 262, 189]  # box_coord [top 19, bottom 189, left 25, right 262]
    images = decode_to_cache(index.select([index.paths.index(ant)]), 100, "stretch", None, num_workers=0)
    assert images.sizes[0].tolist() == [300, 205]
    assert np.allclose(images.box_in_image(0, boxes[ant]), [8, 100 * 18 / 205, 100 * 262 / 300, 100 * 189 / 205])


def test_box_maps_through_resize_and_center_crop():
    from cnnvis.data import ImageSet

    # a 200x100 (w x h) image cached at 50 px with "crop": scale 0.5, 25 px cut on the left and right
    images = ImageSet("t", np.zeros((1, 50, 50, 3), np.uint8), np.zeros(1, int), ["a"], ["p"], np.array([[200, 100]]))
    assert images.box_in_image(0, [60, 20, 140, 80]).tolist() == [5, 10, 45, 40]
    assert images.box_in_image(0, [60, 20, 140, 80], size=40).tolist() == [0, 5, 40, 35]  # then a 40-px center crop
    assert images.box_in_image(0, [0, 0, 200, 100]).tolist() == [0, 0, 50, 50]  # clipped to the image


def test_decoding_records_what_was_loaded_for_run_json(folder, tmp_path):
    from cnnvis.run_record import RunRecord

    record = RunRecord()
    for cache in ("cache", "cache"):  # decoded, then read from the cache: recorded alike
        decode_to_cache(index_imagefolder(folder), 16, "crop", str(tmp_path / cache), num_workers=0, record=record)
    assert record.datasets == 2 * [{"name": "imagefolder", "root": str(folder), "images": 3, "skipped": 1}]


def test_imagenet_falls_back_to_samples_only_without_a_data_location(tmp_path, monkeypatch):
    from hydra import compose, initialize_config_dir

    from cnnvis.config import REPO, register_configs
    from experiments import experiment_configs
    from cnnvis.from_config import images_or_samples_from_config
    from cnnvis.run_record import RunRecord

    register_configs(experiment_configs())
    monkeypatch.chdir(tmp_path)  # the default root, data/, holds nothing here
    monkeypatch.delenv("DATA_ROOT", raising=False)
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=["experiment=zfnet_occlusion", "smoke=true",
                                                       f"cache_dir={tmp_path / 'cache'}"])
        given = compose(config_name="config", overrides=["experiment=zfnet_occlusion",
                                                         f"dataset.root={tmp_path / 'nowhere'}"])
    record = RunRecord()
    assert images_or_samples_from_config(cfg, record).name == "sample photos (fallback: DATA_ROOT unset)"
    assert [d["name"] for d in record.datasets] == ["samples"]  # what_changed reads the fallback from here
    with pytest.raises(DatasetNotFoundError, match="nowhere"):
        images_or_samples_from_config(given, record)
    monkeypatch.setenv("DATA_ROOT", str(tmp_path / "elsewhere"))
    with pytest.raises(DatasetNotFoundError, match="elsewhere"):
        images_or_samples_from_config(cfg, record)
