"""GAP surgery on a pretrained network (cnnvis.gap.GapHead, cnnvis.surgery): the added layers, CAM exactness,
the folds' bookkeeping, the claims' rules (a case for each answer) and the run on torchvision AlexNet / VGG16 from
fake cached weights."""

import os

import numpy as np
import pandas as pd
import pytest
import torch

from cnnvis.claims import COLUMNS, CONTRADICTED, INCONCLUSIVE, NOT_COMPARABLE, REPRODUCED, claims_frame
from cnnvis.data import ImageSet
from cnnvis.gap import SURGERY_CUTS, UNCUT_LAYER, GapHead, head_cams, train_head
from cnnvis.models import build_model
from cnnvis.surgery import baseline_hits, per_image_rate, run_folds, summary, surgery_claims
from cnnvis.transfer import cut_maps
from conftest import needs_caltech101, run_py


def test_gap_head_is_the_papers_added_layers_and_its_cam_is_exact():
    torch.manual_seed(0)
    head = GapHead(40, 6, width=32).eval()
    conv = head.conv[0]
    assert (conv.out_channels, conv.kernel_size, conv.stride, conv.padding) == (32, (3, 3), (1, 1), (1, 1))
    x = torch.randn(3, 40, 7, 7)
    with torch.no_grad():
        logits, cams = head(x), head.cam(x, [0, 5, 2])
    # the CAM's spatial mean plus the class bias is the class's logit (GAP before a linear layer)
    torch.testing.assert_close(cams.mean((1, 2)) + head.fc.bias[[0, 5, 2]], logits[[0, 1, 2], [0, 5, 2]])
    assert head_cams(head, x, [0, 5, 2], 56).shape == (3, 56, 56)
    linear = GapHead(40, 6, width=0)  # the uncut network's head: GAP + a new linear classifier only
    assert isinstance(linear.conv, torch.nn.Identity) and linear(x).shape == (3, 6)
    with pytest.raises(ValueError, match="CAM needs spatial maps"):
        GapHead(40, 6, 0).cam(torch.randn(3, 40), [0, 1, 2])


def test_train_head_learns_separable_maps_and_reports_its_history():
    g = torch.Generator().manual_seed(0)
    y = torch.arange(60) % 3
    x = torch.randn(60, 8, 5, 5, generator=g) * 0.1
    x[torch.arange(60), y] += 1.0  # class c lights channel c
    torch.manual_seed(0)
    head = GapHead(8, 3, 16)
    history = train_head(head, x, y, epochs=15, lr=1e-2, seed=0)
    assert list(history.columns) == ["epoch", "train_loss", "train_top1", "seconds"] and len(history) == 15
    assert history.train_top1.iloc[-1] == 1.0 and history.train_loss.iloc[-1] < history.train_loss.iloc[0]


def blob_data(n_per_class=12, classes=3, side=32, seed=0):
    """Maps whose class lives in one channel, in a blob placed where the image's box is."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(classes), n_per_class)
    maps = rng.normal(0, 0.05, (len(labels), 4, 8, 8)).astype(np.float32)
    boxes = []
    for i, y in enumerate(labels):
        r, c = rng.integers(0, 5, 2)
        maps[i, y, r:r + 3, c:c + 3] += 2.0
        boxes.append([c * side / 8, r * side / 8, (c + 3) * side / 8, (r + 3) * side / 8])
    return torch.from_numpy(maps), labels, np.array(boxes)


def test_run_folds_counts_each_tested_image_and_beats_the_baselines_on_blobs():
    maps, labels, boxes = blob_data()
    runs, hits, (shown, fold0), histories = run_folds({"cut": maps, "head": maps}, {"cut": True, "head": True}, labels, boxes,
                                           3, 4, 2, 0, 16, 25, 1e-2, 8, 0.0, 32, 0.2, "head")
    assert list(runs.network) == ["cut", "head", "cut", "head"] and set(runs.fold) == {0, 1}
    assert (hits["cut"]["tested"] <= 2).all() and hits["cut"]["tested"].sum() == 2 * 8 * 3
    assert shown["cut"].shape == (len(fold0), 32, 32) and runs.trained_enough.all()
    assert len(histories) == 4 * 25 and list(histories.columns[:3]) == ["network", "fold", "epoch"]
    assert (runs.mean_class_accuracy == 100).all()
    rate = per_image_rate(hits["head"])  # GAP + linear on the maps themselves: the CAM is the class's channel
    base = baseline_hits(boxes, 32)
    tested = hits["head"]["tested"] > 0
    assert np.nanmean(rate) > 0.8 > base["centre box"][tested].mean()  # 12x12 boxes at random places
    table = summary(runs, hits, base)
    assert list(table.network) == ["cut", "head", "baseline: centre box", "baseline: full image"]


def fake_runs(acc, loc_grid, passed=True):
    """runs rows for networks {name: per-fold accuracies} with grids {name: side}."""
    rows = [{"network": n, "fold": f, "grid": loc_grid[n], "mean_class_accuracy": a, "trained_enough": passed,
             "gate": "numbers"} for n, accs in acc.items() for f, a in enumerate(accs)]
    return pd.DataFrame(rows)


def fake_hits(rates, n=200):
    return {k: {"gt": np.r_[np.ones(int(r * n)), np.zeros(n - int(r * n))], "top1": np.zeros(n), "tested": np.ones(n)}
            for k, r in rates.items()}


@pytest.mark.parametrize("case, expected", [
    # deep cut localizes better with a finer grid, costs accuracy, GAP costs < 5 points against the uncut network
    (dict(acc={"s4": [88, 87, 89], "s7": [92, 91.5, 92.2], "head": [90, 89.5, 90.5]}, rates={"s4": .7, "s7": .5, "head": .45},
          grid={"s4": 14, "s7": 7, "head": 7}), [REPRODUCED] * 6),
    # below the baselines, no finer grid (nothing to compare), a cost of mixed sign, GAP costs 10 points
    (dict(acc={"s4": [80, 81.5, 79], "s7": [80, 79, 81], "head": [90, 91, 89]}, rates={"s4": .3, "s7": .3, "head": .3},
          grid={"s4": 7, "s7": 7, "head": 7}),
     [CONTRADICTED, CONTRADICTED, NOT_COMPARABLE, INCONCLUSIVE, CONTRADICTED, CONTRADICTED]),
])
def test_surgery_claims_each_rule_for_each_answer(case, expected):
    runs = fake_runs(case["acc"], case["grid"])
    baselines = {"centre box": np.r_[np.ones(80), np.zeros(120)].astype(bool), "full image": np.zeros(200, bool)}
    claims = claims_frame(surgery_claims(runs, fake_hits(case["rates"]), baselines, ["s4", "s7"], "head", 5.0, "net"))
    assert list(claims.columns) == COLUMNS and len(claims) == 6
    assert list(claims.verdict) == expected, claims[["claim", "ours", "verdict"]].to_string()
    assert "centre box: 40.0 %" in claims.baseline.iloc[0]


def test_surgery_claims_that_straddle_their_bars_are_inconclusive():
    runs = fake_runs({"s4": [88, 90, 89], "s7": [89, 89, 90], "head": [92, 98, 92]}, {"s4": 14, "s7": 7, "head": 7})
    ones = lambda start: np.isin(np.arange(200), np.arange(start, start + 80)).astype(float)  # noqa: E731
    hits = {k: {"gt": ones(start), "top1": np.zeros(200), "tested": np.ones(200)}
            for k, start in (("s4", 0), ("s7", 40), ("head", 0))}
    baselines = {"centre box": ones(20).astype(bool), "full image": np.zeros(200, bool)}
    claims = surgery_claims(runs, hits, baselines, ["s4", "s7"], "head", 5.0, "net")
    assert [c.verdict for c in claims] == [INCONCLUSIVE] * 6, claims_frame(claims)[["claim", "ours", "verdict"]]
    assert claims[3].reason.startswith("n < 5") and claims[0].reason.startswith("interval includes 0")
    assert len({c.evidence[0].seed for c in claims}) == 6  # every claim its own bootstrap seed


def test_surgery_claims_of_undertrained_heads_are_not_comparable():
    runs = fake_runs({"s4": [88, 87, 89], "s7": [92, 91, 93], "head": [93, 92, 94]}, {"s4": 14, "s7": 7, "head": 7},
                     passed=False)
    baselines = {"centre box": np.zeros(200, bool), "full image": np.zeros(200, bool)}
    claims = claims_frame(surgery_claims(runs, fake_hits({"s4": .7, "s7": .5, "head": .4}), baselines, ["s4", "s7"],
                                         "head", 5.0, "net"))
    assert (claims.verdict == NOT_COMPARABLE).all() and claims.reason.str.contains(r"undertrained: s4 fold 0: numbers").any()


def fake_random_torchvision_weights(torch_home, builder_name: str):
    """A cached IMAGENET1K_V1 file for ``builder_name``: small random values along each tensor's last axis,
    broadcast over the rest (kilobytes, not the real file's megabytes)."""
    import torchvision

    weights = torchvision.models.get_model_weights(builder_name).IMAGENET1K_V1
    g = torch.Generator().manual_seed(0)
    shapes = {k: v.shape for k, v in torchvision.models.get_model_builder(builder_name)().state_dict().items()}
    state = {k: (torch.randn(shape[-1:], generator=g) * 0.05).expand(shape) for k, shape in shapes.items()}
    file = torch_home / "hub" / "checkpoints" / os.path.basename(weights.url)
    file.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, file)


@pytest.mark.parametrize("name, size", [("alexnet", 96), ("vgg16", 64)])
def test_surgery_runs_on_torchvision_networks_from_cached_weights(tmp_path, monkeypatch, name, size):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    fake_random_torchvision_weights(tmp_path, name)
    model = build_model(name, num_classes=1000, pretrained=True, input_size=size)
    assert "ImageNet" in model.weights_source
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(2), 4)
    paths = [tmp_path / f"img{i}.jpg" for i in range(8)]
    for path in paths:  # the feature cache's key reads each file's size and date
        path.write_bytes(b"x")
    images = ImageSet("fake", rng.integers(0, 255, (8, size, size, 3), dtype=np.uint8), labels, ["a", "b"],
                      [str(p) for p in paths], np.full((8, 2), size))
    cuts, (uncut, spatial) = SURGERY_CUTS[name], UNCUT_LAYER[name]
    maps = cut_maps(model, images, [*cuts, uncut], size, str(tmp_path / "cache"), name)
    assert all(maps[c].ndim == 4 for c in cuts) and maps[uncut].ndim == 2 and not spatial  # fc7: no CAM
    assert (tmp_path / "cache" / "features").is_dir()  # through transfer's feature cache
    boxes = np.tile([0, 0, size / 2, size / 2], (8, 1))
    runs, hits, _, _ = run_folds(maps, {**{c: True for c in cuts}, uncut: False}, labels, boxes, 2, 2, 1, 0, 8, 2,
                              1e-3, 4, 0.0, size, 0.2, uncut)
    assert set(runs.network) == {*cuts, uncut} and set(hits) == set(cuts)
    assert runs.loc[runs.network == uncut, "loc_gt_known"].isna().all()


@needs_caltech101
def test_cam_gap_surgery_end_to_end(tmp_path):
    result = run_py("experiment=cam_gap", "smoke=true", f"results_dir={tmp_path}", f"cache_dir={tmp_path / 'cache'}",
                    timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    table = pd.read_csv(tmp_path / "cam_gap" / "gap_vs_original.csv")
    assert list(table.network) == [*SURGERY_CUTS["efficientnet_lite0"], "head", "baseline: centre box",
                                   "baseline: full image"]
    assert list(table.cam_grid[:5]) == ["14x14", "14x14", "7x7", "7x7", "7x7"]
    claims = pd.read_csv(tmp_path / "cam_gap" / "claims.csv")
    assert list(claims.columns) == COLUMNS and len(claims) == 10
    assert (claims.verdict == NOT_COMPARABLE).all()  # 2 smoke epochs: the gate says undertrained
    assert (tmp_path / "cam_gap" / "cam_maps.png").stat().st_size > 1000


def test_the_figure_takes_each_class_first_test_image_in_test_order():
    from cnnvis.surgery import first_test_of_each_class

    labels = np.array([2, 0, 2, 1, 0, 1])
    assert first_test_of_each_class(labels, np.array([5, 0, 4, 1, 3]), 2) == [0, 1]  # classes 1 and 2, then 0
    assert first_test_of_each_class(labels, np.array([5, 0, 4, 1, 3]), 9) == [0, 1, 2]


def test_surgery_metrics_average_over_folds_and_skip_missing_localization():
    from cnnvis.surgery import surgery_metrics

    runs = pd.DataFrame({"network": ["a", "a", "b"], "mean_class_accuracy": [0.5, 0.7, 0.9],
                         "loc_gt_known": [0.2, 0.4, np.nan], "trained_enough": [True, True, False]})
    assert surgery_metrics(runs) == pytest.approx({"trained_enough": 0, "a/mean_class_accuracy": 0.6,
                                                   "a/loc_gt_known": 0.3, "b/mean_class_accuracy": 0.9})
