"""The shard plan of the dataset-level analyses (cnnvis.shards): 1, 2 and 3 shards give the same top-k lists, per-image
tables and claims as one process; a killed shard re-runs alone; a folder of another plan is an error; torchrun's
ranks (gloo) share the shards and rank 0 merges."""

import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from torch import nn

from cnnvis import occlusion_measures as om
from cnnvis.claims import claims_frame
from cnnvis.data import ImageFiles, ImageSet, decode_to_cache, index_imagefolder
from cnnvis.mining import FIELDS, top_activations
from cnnvis.models import ImageClassifier, Normalize, build_model
from cnnvis.shards import (ONE_PROCESS, ShardPlan, ShardPlanError, ShardStore, merge_topk, shard_indices,
                           shards_of_rank)
from conftest import REPO, needs_caltech101

SPLITS = [1, 2, 3]


def plans(tmp_path) -> list[ShardPlan]:
    """One process in memory, then 1, 2 and 3 shards written to a folder each and merged."""
    return [ONE_PROCESS] + [ShardPlan(n, folder=tmp_path / f"{n}-shards", fingerprint="test") for n in SPLITS]


def tiny_classifier(seed=0):
    torch.manual_seed(seed)
    features = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 5, 3, stride=2, padding=1), nn.ReLU())
    return ImageClassifier(Normalize((0.5,) * 3, (0.25,) * 3), features,
                           nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten()), nn.Linear(5, 4),
                           {"conv1": "features.1", "conv2": "features.3"}, input_size=32).eval()


def random_images(n=13, side=40, seed=0) -> ImageSet:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (n, side, side, 3), dtype=np.uint8)
    pixels[7] = pixels[2]  # the same image twice: exact ties, which the merge must break by image index
    return ImageSet("random", pixels, np.arange(n) % 4, list("abcd"), [f"{i}.png" for i in range(n)],
                    np.full((n, 2), side))


def test_shards_are_contiguous_cover_every_item_once_and_differ_by_at_most_one():
    for n, count in [(10, 3), (3, 3), (7, 1), (100, 7)]:
        parts = [shard_indices(n, count, s) for s in range(count)]
        assert np.array_equal(np.concatenate(parts), np.arange(n))
        assert max(map(len, parts)) - min(map(len, parts)) <= 1
    blocks = [shard_indices(10, 3, s, block=4) for s in range(3)]
    assert [b.tolist() for b in blocks] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]  # whole batches of 4
    assert shards_of_rank(5, 1, 2) == [1, 3]
    with pytest.raises(ValueError, match="numbered 0..2"):
        shard_indices(10, 3, 3)


def test_merge_topk_equals_a_sort_of_everything_ties_by_image_index():
    rng = np.random.default_rng(0)
    values = rng.integers(0, 4, (5, 30)).astype(np.float32)  # many ties
    index = np.tile(np.arange(30), (5, 1))
    parts = [{"values": values[:, s], "image_index": index[:, s]} for s in (slice(0, 9), slice(9, 20), slice(20, 30))]
    merged = merge_topk(parts, 6)
    for row in range(5):
        expected = sorted(range(30), key=lambda i: (-values[row, i], i))[:6]
        assert merged["image_index"][row].tolist() == expected


def test_a_folder_of_another_plan_is_an_error_naming_both(tmp_path):
    ShardStore(tmp_path, 10, 2, "abc")
    ShardStore(tmp_path, 10, 2, "abc")  # the same plan: fine
    with pytest.raises(ShardPlanError, match="another shard plan.*'n_shards': 2.*'n_shards': 3"):
        ShardStore(tmp_path, 10, 3, "abc")
    with pytest.raises(ShardPlanError, match="another shard plan"):
        ShardStore(tmp_path, 10, 2, "other config")


def test_more_shards_than_batches_leaves_the_last_shards_empty(tmp_path):
    rows = ShardPlan(5, folder=tmp_path, fingerprint="f").rows("x", 2, lambda idx: pd.DataFrame({"i": idx}))
    pd.testing.assert_frame_equal(rows, pd.DataFrame({"i": np.arange(2)}))
    images, model = random_images(n=9), tiny_classifier()
    one, many = (top_activations(model, images, ["conv2"], k=3, batch_size=2, plan=p, progress=False)["conv2"]
                 for p in (ONE_PROCESS, ShardPlan(7, folder=tmp_path, fingerprint="f")))  # 5 batches, 7 shards
    assert all(torch.equal(getattr(one, f), getattr(many, f)) for f in FIELDS)


def test_mining_gives_the_same_top_k_however_it_is_split(tmp_path):
    images = random_images()
    model = tiny_classifier()
    results = [top_activations(model, images, ["conv1", "conv2"], k=5, batch_size=4, plan=p, progress=False)
               for p in plans(tmp_path)]
    for result in results[1:]:
        for layer in ["conv1", "conv2"]:
            for f in FIELDS:
                assert torch.equal(getattr(result[layer], f), getattr(results[0][layer], f)), (layer, f)
    one = results[0]["conv1"]
    # the duplicated image (2 and 7) ties exactly with itself: where both are listed, 2 comes first
    for ch in range(one.values.shape[0]):
        listed = one.image_index[ch].tolist()
        if 2 in listed and 7 in listed:
            assert listed.index(2) < listed.index(7)


def test_mining_streamed_from_files_equals_the_cache(tmp_path):
    images = random_images(n=9, side=40)
    for i, pixels in enumerate(images.images):
        (tmp_path / "photos" / "c").mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(tmp_path / "photos" / "c" / f"{i}.png")
    index = index_imagefolder(tmp_path / "photos")
    cached = decode_to_cache(index, 36, "crop", None, 0)
    streamed = ImageFiles(index.name, index.paths, index.labels, index.classes, 36, "crop", num_workers=2)
    assert torch.equal(streamed.tensors([3, 1], 32), cached.tensors([3, 1], 32))
    assert torch.equal(streamed.mean_color(), cached.mean_color())
    model = tiny_classifier()
    a, b = (top_activations(model, s, ["conv2"], k=4, batch_size=4, size=32, progress=False,
                            plan=ShardPlan(2, folder=tmp_path / name, fingerprint="x"))["conv2"]
            for s, name in ((cached, "cached"), (streamed, "streamed")))
    assert all(torch.equal(getattr(a, f), getattr(b, f)) for f in FIELDS)


def occlusion_drop(images, plan, model, rng_seed=0):
    return om.quantitative_drop(model, images, "conv2", 32, None, torch.full((3,), 0.5), np.random.default_rng(rng_seed),
                                plan, size=16, stride=8, batch_size=8, channels_last=False, incremental=False)


def test_occlusion_statistics_and_claims_are_the_same_however_they_are_split(tmp_path):
    images, model = random_images(), tiny_classifier()
    drops = [occlusion_drop(images, p, model) for p in plans(tmp_path)]
    claims = [claims_frame(om.claims_table(d, None, 0.5, 0.1)) for d in drops]
    assert len(drops[0]) == len(images)
    for drop, claim in zip(drops[1:], claims[1:]):
        pd.testing.assert_frame_equal(drop, drops[0], check_exact=False, rtol=0, atol=1e-6)
        assert list(claim.verdict) == list(claims[0].verdict)
        pd.testing.assert_frame_equal(claim, claims[0])


def test_a_killed_shard_reruns_alone_and_the_merge_equals_the_uninterrupted_run(tmp_path):
    images, model = random_images(), tiny_classifier()
    uninterrupted = occlusion_drop(images, ONE_PROCESS, model)
    plan = ShardPlan(3, folder=tmp_path, fingerprint="run")
    computed = []

    def killed_at_shard_1(positions):
        if positions[0] == shard_indices(len(images), 3, 1)[0]:
            raise KeyboardInterrupt  # the process dies in shard 1: shard 0 is written, 1 and 2 are not
        computed.append(positions[0])
        return {"p": positions}

    with pytest.raises(KeyboardInterrupt):
        plan.run("drop", len(images), killed_at_shard_1, lambda parts: parts)
    store = ShardStore(tmp_path / "drop", len(images), 3, "run")
    assert store.missing_shards() == [1, 2] and not list((tmp_path / "drop").glob(".*tmp*"))
    with pytest.raises(ShardPlanError, match=r"shard\(s\) \[1, 2\] of 3 not written"):
        ShardPlan(3, [], tmp_path, fingerprint="run").run("drop", len(images), killed_at_shard_1, lambda parts: parts)

    # the same on the real analysis: shard 1 alone again, after its file is damaged
    rows = ShardPlan(3, folder=tmp_path / "real", fingerprint="run")
    occlusion_drop(images, rows, model)
    damaged = ShardStore(tmp_path / "real" / "drop", len(images), 3, "run").path(1)
    damaged.write_bytes(damaged.read_bytes()[:50])
    before = {s: ShardStore(tmp_path / "real" / "drop", len(images), 3, "run").path(s).stat().st_mtime_ns for s in (0, 2)}
    resumed = occlusion_drop(images, ShardPlan(3, [1], tmp_path / "real", fingerprint="run"), model)
    pd.testing.assert_frame_equal(resumed, uninterrupted)
    after = {s: ShardStore(tmp_path / "real" / "drop", len(images), 3, "run").path(s).stat().st_mtime_ns for s in (0, 2)}
    assert before == after  # shards 0 and 2 were read, not computed again


def test_shards_that_only_write_return_none_and_the_merge_job_makes_the_table(tmp_path):
    images, model = random_images(), tiny_classifier()
    for shard in range(3):  # one submitit job per shard
        assert occlusion_drop(images, ShardPlan(3, [shard], tmp_path, merges=False, fingerprint="f"), model) is None
    merged = occlusion_drop(images, ShardPlan(3, [], tmp_path, fingerprint="f"), model)  # shards.merge_only=true
    pd.testing.assert_frame_equal(merged, occlusion_drop(images, ONE_PROCESS, model))


@needs_caltech101
@pytest.mark.real_data
def test_caltech_localization_is_the_same_however_it_is_split(tmp_path):
    model = build_model("alexnet", pretrained=False, input_size=64).eval()
    root = os.environ.get("DATA_ROOT", str(REPO / "data"))
    frames = [om.caltech_localization(model, root, 64, str(tmp_path / "cache"), 0, 3, 2, 0.5, 0.1, 0,
                                      np.random.default_rng(0), n_classes=3, plan=p, size=32, stride=32, batch_size=16,
                                      channels_last=False, incremental=True)[0] for p in plans(tmp_path)[::2]]
    assert len(frames[0]) == 6
    for frame in frames[1:]:
        pd.testing.assert_frame_equal(frame, frames[0], check_exact=False, rtol=0, atol=1e-6)
    verdicts = [list(claims_frame(om.claims_table(pd.DataFrame(), f, 0.5, 0.1)).verdict) for f in frames]
    assert all(v == verdicts[0] for v in verdicts)


def run_py(*args, launcher=(sys.executable,), timeout=300):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("DATA_ROOT", None)
    return subprocess.run([*launcher, str(REPO / "run.py"), *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, env=env)


@pytest.mark.distributed
def test_torchrun_ranks_share_the_shards_and_rank_0_merges_what_one_process_finds(tmp_path):
    """rcnn_patches' mining on the bundled sample photos: 2 CPU processes (gloo), 3 shards, vs one process."""
    common = ["experiment=rcnn_patches", "dataset=samples", "smoke=true", "threads=1", "model.pretrained=false",
              "experiment.batch_size=1"]  # shards are whole batches: 4 images make 4 batches of 1, none empty
    common.append(f"cache_dir={tmp_path / 'cache'}")  # cold: both ranks decode into it at once (the race it guards)
    one = run_py(*common[:-1], f"results_dir={tmp_path / 'one'}")
    assert one.returncode == 0, one.stderr[-3000:]
    torchrun = (sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2")
    two = run_py(*common, "shards.count=3", f"shards.dir={tmp_path / 'shards'}", f"results_dir={tmp_path / 'ddp'}",
                 launcher=torchrun)
    assert two.returncode == 0, two.stderr[-3000:]
    assert len(list((tmp_path / "shards").rglob("shard-*-of-3.npz"))) == 3
    units = [pd.read_csv(tmp_path / side / "rcnn_patches" / "units.csv") for side in ("one", "ddp")]
    pd.testing.assert_frame_equal(units[1], units[0], check_exact=False, rtol=0, atol=1e-6)


def test_cam_metrics_and_claims_are_the_same_however_they_are_split(tmp_path):
    from cnnvis import localization as loc
    from experiments.cam_methods import COMPARISONS, PUBLISHED
    from tests.test_sanity import TinyNet

    torch.manual_seed(0)
    net = TinyNet().eval()
    x = torch.rand(12, 3, 32, 32)
    rng = np.random.default_rng(0)
    corners = rng.integers(0, 16, (12, 2))
    boxes = np.concatenate([corners, corners + rng.integers(8, 16, (12, 2))], 1).astype(float)
    options = dict(layer="conv2", layercam_layers=["conv1", "conv2"], batch_size=2, scorecam_batch_size=2)
    runs = [loc.score_dataset(net, net, x, net(x).argmax(1), ["gradcam", "gradcam++", "scorecam", "saliency"], options,
                              scorecam_images=3, figure_images=3, n_curve=5, steps=3, tolerance=5.0, boxes=boxes,
                              plan=p) for p in plans(tmp_path)]
    scores, _, shown, predicted = runs[0]
    claims = claims_frame(loc.paper_claims(scores, "caltech101", True, COMPARISONS, PUBLISHED))
    for other, _, other_shown, other_predicted in runs[1:]:
        assert list(other) == list(scores)
        for name, entry in scores.items():
            assert list(other[name]) == list(entry)
            for metric, values in entry.items():
                pairs = values.items() if metric == "curves" else [(metric, values)]
                for key, v in pairs:
                    w = other[name]["curves"][key] if metric == "curves" else other[name][metric]
                    # other batches round differently; Grad-CAM++'s cubed gradients carry that to ~1e-3 relative
                    np.testing.assert_allclose(w, v, rtol=1e-3, atol=1e-6, err_msg=f"{name} {key}")
        assert all(torch.allclose(other_shown[m], shown[m], rtol=0, atol=1e-6) for m in shown)
        assert all(np.allclose(a, b, rtol=0, atol=1e-6) for m in predicted for a, b in zip(other_predicted[m], predicted[m]))
        other_claims = claims_frame(loc.paper_claims(other, "caltech101", True, COMPARISONS, PUBLISHED))
        assert list(other_claims.verdict) == list(claims.verdict)
