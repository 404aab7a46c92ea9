"""The trainer: the paper's recipe pieces, exact resume after a kill, and DDP (2 gloo processes) = 1 process."""

import json
import logging
import os
import signal
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from cnnvis.data import ImageSet, ImageTensors
from cnnvis.from_config import train_val_sets, train_val_test_sets
from cnnvis.run_record import RunRecord, sha256_of, trained_by
from cnnvis.training import (KILL_ENV, EpochSampler, TrainConfig, evaluate, fit, load_checkpoint, paper_init_,
                             renormalize_filters_, scaled_keep_epochs, select_trainable, split_held_out)

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent


class Tiny(nn.Module):
    """conv -> relu -> (dropout) -> global pool -> linear; ``input_size`` as the harness models have."""

    def __init__(self, classes=3, dropout=0.5, input_size=16):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 6, 3, stride=2), nn.ReLU())
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(6, classes)
        self.input_size = input_size

    def forward(self, x):
        return self.head(self.drop(self.features(x).mean((2, 3))))


def tiny_images(n=24, side=20, classes=3, seed=0) -> ImageSet:
    """Images whose class is their dominant colour channel (learnable in a few steps)."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % classes
    images = rng.integers(0, 120, (n, side, side, 3)).astype(np.uint8)
    for i, y in enumerate(labels):
        images[i, ..., y] += 120
    return ImageSet("tiny", images, labels, [f"c{c}" for c in range(classes)], [f"img{i}" for i in range(n)],
                    np.full((n, 2), side), "crop")


def tiny_run(ckpt_dir, out_json, dropout=0.5, **options):
    """One training run of Tiny on tiny_images; its history and weights go to out_json (rank 0)."""
    logging.basicConfig(level=logging.INFO)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the same arithmetic in the test process and in the subprocesses
    images = tiny_images()
    train, val = ImageTensors(images, range(0, 18), 16, train=True), ImageTensors(images, range(18, 24), 16)
    torch.manual_seed(0)
    model = Tiny(dropout=dropout)
    cfg = TrainConfig(**{"epochs": 3, "batch_size": 6, "lr": 0.05, "num_workers": 0, **options})
    history = fit(model, train, val, cfg, ckpt_dir, "cpu", seed=1)
    torch.set_num_threads(threads)
    if int(os.environ.get("RANK", "0")) == 0:
        weights = {k: v.tolist() for k, v in model.state_dict().items()}
        Path(out_json).write_text(json.dumps({"history": history.drop(columns="seconds").to_dict("list"),
                                              "weights": weights}))


def run_tiny(tmp_path, name, env=None, torchrun=False, **options):
    code = (f"import sys; sys.path.insert(0, {str(TESTS)!r}); from test_training import tiny_run; "
            f"tiny_run({str(tmp_path / name)!r}, {str(tmp_path / (name + '.json'))!r}, **{options!r})")
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"] if torchrun \
        else [sys.executable]
    args = [*launcher, "-c", code] if not torchrun else [*launcher, "--no-python", sys.executable, "-c", code]
    return subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})})


def read_run(tmp_path, name):
    return json.loads((tmp_path / (name + ".json")).read_text())


def test_keep_epochs_scale_the_papers_schedule():
    assert scaled_keep_epochs(64) == [1, 2, 5, 10, 20, 30, 40, 64]
    assert scaled_keep_epochs(10) == [1, 2, 3, 5, 6, 10]
    assert scaled_keep_epochs(1) == [1]


def test_filter_rms_renormalization_matches_a_naive_loop():
    conv = nn.Conv2d(3, 8, 5)
    with torch.no_grad():
        conv.weight.mul_(torch.linspace(0.1, 4, 8).view(8, 1, 1, 1))
    before = conv.weight.detach().clone()
    n = renormalize_filters_(nn.Sequential(conv), 0.1)
    expected = []
    for w in before:
        rms = float(np.sqrt(np.mean(w.numpy() ** 2)))
        expected.append(w * (0.1 / rms) if rms > 0.1 else w)
    torch.testing.assert_close(conv.weight.detach(), torch.stack(expected))
    assert n == sum(float(w.pow(2).mean().sqrt()) > 0.1 for w in before) > 0
    assert float(conv.weight.detach().pow(2).mean((1, 2, 3)).sqrt().max()) <= 0.1 + 1e-6


def test_paper_init():
    model = nn.Sequential(nn.Conv2d(3, 64, 7), nn.Linear(500, 400))
    paper_init_(model)
    for m in model:
        w = m.weight.detach()
        assert abs(float(w.std()) - 1e-2) < 5e-4 and abs(float(w.mean())) < 5e-4
        assert float(m.bias.detach().abs().max()) == 0


def test_ddp_batches_are_the_single_process_batches():
    single = list(EpochSampler(22, seed=3, epoch=2))
    ranks = [list(EpochSampler(22, seed=3, epoch=2, rank=r, world=2)) for r in range(2)]
    for b in range(22 // 4):  # global batch 4 = 2 per rank
        assert sorted(single[4 * b: 4 * b + 4]) == sorted(ranks[0][2 * b: 2 * b + 2] + ranks[1][2 * b: 2 * b + 2])
    assert list(EpochSampler(22, 3, 2, start=5)) == single[5:]
    assert single != list(EpochSampler(22, 3, 3))  # a new order every epoch


def test_evaluate_matches_a_naive_loop_center_and_ten_crop():
    images = tiny_images(n=9)
    val = ImageTensors(images, range(9), 16)
    torch.manual_seed(0)
    model = Tiny(dropout=0.0).eval()
    got = evaluate(model, val, "cpu", batch_size=4)
    got10 = evaluate(model, val, "cpu", batch_size=4, ten_crop=True)
    losses, hits1, hits5, losses10, hits10 = [], [], [], [], []
    for i in range(9):
        full = torch.from_numpy(images.images[i].copy()).permute(2, 0, 1).float() / 255
        y = int(images.labels[i])
        with torch.no_grad():
            p = F.softmax(model(full[None, :, 2:18, 2:18]), 1)[0]
            crops = [full[:, t:t + 16, s:s + 16] for t, s in [(0, 0), (0, 4), (4, 0), (4, 4), (2, 2)]]
            crops += [c.flip(-1) for c in crops]
            p10 = torch.stack([F.softmax(model(c[None]), 1)[0] for c in crops]).mean(0)
        losses.append(-float(p[y].log()))
        hits1.append(int(p.argmax()) == y)
        hits5.append(True)  # 3 classes: always in the top 5
        losses10.append(-float(p10[y].log()))
        hits10.append(int(p10.argmax()) == y)
    assert got["loss"] == pytest.approx(np.mean(losses), rel=1e-5)
    assert got["top1"] == pytest.approx(np.mean(hits1)) and got["top5"] == 1.0
    assert got10["loss"] == pytest.approx(np.mean(losses10), rel=1e-5)
    assert got10["top1"] == pytest.approx(np.mean(hits10))


def test_fit_learns_keeps_epochs_and_writes_loadable_checkpoints(tmp_path):
    images = tiny_images(n=48)
    train, val = ImageTensors(images, range(36), 16, train=True), ImageTensors(images, range(36, 48), 16)
    torch.manual_seed(0)
    model = Tiny(dropout=0.0)
    seen = []
    cfg = TrainConfig(epochs=4, batch_size=6, lr=0.1, num_workers=0, keep_epochs=[1, 3], filter_rms=0.5)
    history = fit(model, train, val, cfg, tmp_path / "ck", "cpu", on_epoch_end=lambda h: seen.append(len(h)))
    assert list(history.columns) == ["epoch", "lr", "train_loss", "train_top1", "val_loss", "val_top1",
                                     "val_top5", "seconds"]
    assert history.epoch.tolist() == [1, 2, 3, 4] and seen == [1, 2, 3, 4]
    assert history.train_loss.iloc[-1] < history.train_loss.iloc[0] and history.val_top1.iloc[-1] > 0.5
    assert sorted(p.name for p in (tmp_path / "ck").iterdir()) == ["epoch_001.pt", "epoch_003.pt", "last.pt"]
    state = load_checkpoint(tmp_path / "ck" / "epoch_003.pt")  # weights_only=True
    assert state["epoch"] == 3 and set(state["model"]) == set(model.state_dict())
    assert float(model.features[0].weight.pow(2).mean((1, 2, 3)).sqrt().max()) <= 0.5 + 1e-6
    again = fit(model, train, val, cfg, tmp_path / "ck", "cpu")  # finished: resumes to the same history
    pd.testing.assert_frame_equal(again, history)


def test_each_checkpoint_names_the_runs_that_trained_it_and_the_record_says_whether_this_run_did(tmp_path):
    data = ImageTensors(tiny_images(n=12), range(12), 16, train=True)
    cfg = TrainConfig(epochs=1, batch_size=6, num_workers=0, keep_epochs=[1])
    first = RunRecord({"run_id": "first", "experiment": "train"})
    fit(Tiny(), data, None, cfg, tmp_path, "cpu", record=first)
    assert first.checkpoints == [{"path": str(tmp_path / "last.pt"), "sha256": sha256_of(tmp_path / "last.pt"),
                                  "trained_by": [{"run_id": "first", "experiment": "train", "from_epoch": 0,
                                                  "to_epoch": 1}],
                                  "trained_in_this_run": True}]
    assert trained_by(tmp_path / "epoch_001.pt") == first.checkpoints[0]["trained_by"]
    resumed = RunRecord({"run_id": "second"})
    fit(Tiny(), data, None, replace(cfg, epochs=2), tmp_path, "cpu", record=resumed)  # one more epoch
    runs = resumed.checkpoints[0]["trained_by"]
    assert [(r["run_id"], r["from_epoch"], r["to_epoch"]) for r in runs] == [("first", 0, 1), ("second", 1, 2)]
    reused = RunRecord({"run_id": "third"})
    fit(Tiny(), data, None, replace(cfg, epochs=2), tmp_path, "cpu", record=reused)  # finished: nothing trained
    assert reused.checkpoints[0]["trained_by"] == runs and not reused.checkpoints[0]["trained_in_this_run"]

    torch.save({"model": Tiny().state_dict()}, tmp_path / "last.pt")  # replaced by hand: its sidecar is stale
    replaced = RunRecord()
    replaced.add_checkpoint(tmp_path / "last.pt")
    assert replaced.checkpoints[0]["trained_by"].startswith("unknown: last.pt.json describes another version")
    (tmp_path / "last.pt.json").unlink()
    untraced = RunRecord()
    untraced.add_checkpoint(tmp_path / "last.pt")
    untraced.add_checkpoint(tmp_path / "last.pt")  # read twice, listed once
    assert [c["trained_by"][:25] for c in untraced.checkpoints] == ["unknown: no last.pt.json "]


def test_what_a_figure_shows_repeats_only_what_the_record_holds(tmp_path):
    data = ImageTensors(tiny_images(n=12), range(12), 16, train=True)
    record = RunRecord({"run_id": "this", "experiment": "sanity_checks", "git_commit": "0123456789"})
    fit(Tiny(), data, None, TrainConfig(epochs=1, batch_size=6, num_workers=0), tmp_path / "zfnet_caltech101-ab",
        "cpu", record=record)
    record.weights.append({"model": "efficientnet_lite0", "weights": "pretrained ImageNet"})
    record.add_dataset("imagenet_val", ["/d/a.jpg", "/d/b.jpg"], 2, 0)
    record.add_dataset("caltech101", ["/c/a.jpg"], 1, 0)
    assert record.shown(["efficientnet_lite0"], {"imagenet_val": 2}) == {
        "network": "efficientnet_lite0 (pretrained ImageNet)", "data": "imagenet_val (2 images)"}
    assert record.shown([], {"caltech101": 1}, [tmp_path / "zfnet_caltech101-ab" / "last.pt"]) == {
        "network": "zfnet_caltech101-ab/last.pt (trained in this run)", "data": "caltech101 (1 image)"}
    with pytest.raises(ValueError, match=r"\['vgg16'\] not recorded.*efficientnet_lite0.*caltech101"):
        record.shown(["vgg16"], {"caltech101": 1})
    with pytest.raises(ValueError, match="samples"):
        record.shown(["efficientnet_lite0"], {"samples": 3})


def test_plateau_lowers_the_learning_rate(tmp_path):
    images = tiny_images(n=12)
    data = ImageTensors(images, range(12), 16)
    model = Tiny(dropout=0.0)
    cfg = TrainConfig(epochs=4, batch_size=12, lr=1e-6, num_workers=0, plateau_patience=0, plateau_factor=0.5)
    history = fit(model, data, data, cfg, tmp_path / "ck", "cpu")  # a tiny lr: the val loss cannot improve
    assert history.lr.iloc[0] == 1e-6 and history.lr.iloc[-1] < 1e-6


def test_trainable_prefixes_freeze_the_rest(tmp_path):
    images = tiny_images(n=12)
    data = ImageTensors(images, range(12), 16, train=True)
    model = Tiny(dropout=0.0)
    conv_before = model.features[0].weight.detach().clone()
    head_before = model.head.weight.detach().clone()
    fit(model, data, None, TrainConfig(epochs=1, batch_size=6, num_workers=0, trainable=["head."]), tmp_path, "cpu")
    assert torch.equal(model.features[0].weight, conv_before) and not torch.equal(model.head.weight, head_before)
    with pytest.raises(ValueError, match="features, head"):
        select_trainable(Tiny(), ["classifier."])


@pytest.mark.parametrize("options", [{"checkpoint_every": 1, "num_workers": 2}, {}],
                         ids=["mid-epoch-checkpoints", "epoch-checkpoints"])
def test_killed_mid_epoch_resumes_to_the_same_result(tmp_path, options):
    tiny_run(tmp_path / "reference", tmp_path / "reference.json", **options)
    killed = run_tiny(tmp_path, "resumed", env={KILL_ENV: "5"}, **options)  # 3 steps/epoch: dies in epoch 2
    assert killed.returncode == -signal.SIGKILL and not (tmp_path / "resumed.json").exists()
    state = load_checkpoint(tmp_path / "resumed" / "last.pt")
    assert (state["epoch"], state["step"]) == ((1, 2) if options else (1, 0))
    resumed = run_tiny(tmp_path, "resumed", **options)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming" in resumed.stderr and ("at epoch 2 step 2" in resumed.stderr) == bool(options)
    assert read_run(tmp_path, "resumed") == read_run(tmp_path, "reference")  # bit for bit


def test_two_gloo_processes_match_one_process(tmp_path):
    tiny_run(tmp_path / "single", tmp_path / "single.json", dropout=0.0)
    ddp = run_tiny(tmp_path, "ddp", torchrun=True, dropout=0.0)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    one, two = read_run(tmp_path, "single"), read_run(tmp_path, "ddp")
    for key, values in one["history"].items():
        np.testing.assert_allclose(two["history"][key], values, rtol=1e-4, atol=1e-6, err_msg=key)
    for key, values in one["weights"].items():
        np.testing.assert_allclose(two["weights"][key], values, rtol=1e-4, atol=1e-6, err_msg=key)


# ---------------------------------------------------------------- end to end, through run.py

from conftest import needs_caltech101, run_py  # noqa: E402

from cnnvis.claims import ANSWERS  # noqa: E402


@needs_caltech101
def test_train_then_evolution_share_one_run(tmp_path, monkeypatch):
    monkeypatch.setenv("CNNVIS_CHECKPOINTS", str(tmp_path / "ck"))
    train = run_py("experiment=train", "smoke=true", f"results_dir={tmp_path}")
    assert train.returncode == 0, train.stderr[-3000:]
    metrics = pd.read_csv(tmp_path / "train" / "metrics.csv")
    assert metrics.epoch.tolist() == [1, 2] and {"val_top1", "val_top5", "seconds"} <= set(metrics.columns)
    for name in ["curves.png", "conv1_filters.png", "metrics.md", "run.json"]:
        assert (tmp_path / "train" / name).exists(), name
    assert load_checkpoint(tmp_path / "ck" / "zfnet_caltech101" / "last.pt")["classes"]  # the stable export
    trained = json.loads((tmp_path / "train" / "run.json").read_text())
    last, export = trained["checkpoints"]
    assert last["trained_in_this_run"] and [r["run_id"] for r in last["trained_by"]] == [trained["run_id"]]
    assert export["path"] == str(tmp_path / "ck" / "zfnet_caltech101" / "last.pt")
    assert export["trained_by"] == last["trained_by"] and export["trained_in_this_run"]
    evolution = run_py("experiment=zfnet_evolution", "smoke=true", f"results_dir={tmp_path}")
    assert evolution.returncode == 0, evolution.stderr[-3000:]
    assert (tmp_path / "zfnet_evolution" / "evolution.png").stat().st_size > 5000
    runs = [p for p in (tmp_path / "ck").iterdir() if p.name.startswith("zfnet_caltech101-")]
    assert len(runs) == 1 and "epochs=2" not in evolution.stderr  # reused, not retrained
    assert "epoch 1/2" not in evolution.stderr
    reused = json.loads((tmp_path / "zfnet_evolution" / "run.json").read_text())["checkpoints"]
    assert reused[0]["path"] == last["path"] and len(reused) > 1  # then the kept epochs it drew
    assert {r["run_id"] for c in reused for r in c["trained_by"]} == {trained["run_id"]}
    assert not any(c["trained_in_this_run"] for c in reused)
    claims = pd.read_csv(tmp_path / "zfnet_evolution" / "claims.csv")  # two smoke epochs: the gate fails
    assert claims.verdict.tolist() == ["not comparable"] and claims.reason[0].startswith("undertrained: ")
    assert (tmp_path / "zfnet_evolution" / "claims_evidence.npz").exists()
    change = pd.read_csv(tmp_path / "zfnet_evolution" / "feature_change.csv")
    assert change.epoch.unique().tolist() == [0, 1, 2] and (change[change.epoch == 0].share_left == 1).all()
    # the gate travels with the weights: a figure drawn from them says the run never learned
    export_dir = tmp_path / "ck" / "zfnet_caltech101"
    assert not json.loads((export_dir / "gate.json").read_text())["trained_enough"]
    deconv = run_py("experiment=zfnet_deconv", "smoke=true", "model=zfnet", f"model.checkpoint={export_dir}/last.pt",
                    "model.input_size=112", "model.num_classes=10", "dataset=caltech101", f"results_dir={tmp_path}")
    assert deconv.returncode == 0, deconv.stderr[-3000:]
    judged = json.loads((tmp_path / "zfnet_deconv" / "run.json").read_text())["metrics"]
    assert judged["trained_enough"] == 0 and "epoch(s)" in judged["gate"]


@needs_caltech101
def test_ablations_end_to_end(tmp_path, monkeypatch):
    monkeypatch.setenv("CNNVIS_CHECKPOINTS", str(tmp_path / "ck"))
    conv1 = run_py("experiment=zfnet_conv1_ablation", "smoke=true", f"results_dir={tmp_path}")
    assert conv1.returncode == 0, conv1.stderr[-3000:]
    runs = pd.read_csv(tmp_path / "zfnet_conv1_ablation" / "runs.csv")
    assert len(runs) == 4 and runs.dead_conv1_fraction.between(0, 1).all()
    assert (tmp_path / "zfnet_conv1_ablation" / "conv1_filters.png").exists()
    assert "paper" in (tmp_path / "zfnet_conv1_ablation" / "claims.md").read_text()
    conv1_claims = pd.read_csv(tmp_path / "zfnet_conv1_ablation" / "claims.csv")
    assert set(conv1_claims.verdict) <= set(ANSWERS) and conv1_claims["random-weights control"].str.startswith(
        "not applicable").all()
    arch = run_py("experiment=zfnet_arch_ablation", "smoke=true", "experiment.variants=[base,no_fc6_fc7,no_conv3_conv4]",
                  f"results_dir={tmp_path}")
    assert arch.returncode == 0, arch.stderr[-3000:]
    table = pd.read_csv(tmp_path / "zfnet_arch_ablation" / "table3.csv")
    assert table.variant.tolist() == ["base", "no_fc6_fc7", "no_conv3_conv4"]
    assert table.paper_val_top1_err.tolist() == [38.4, 44.8, 45.4]
    assert table.test_top1_err.str.endswith("(n = 2)").all()  # two seeds by default, test split reported
    claims = pd.read_csv(tmp_path / "zfnet_arch_ablation" / "claims.csv")
    assert claims.claim.tolist() == ["removing layers 6,7 costs little"] and claims.n.tolist() == [2]
    assert (tmp_path / "zfnet_arch_ablation" / "claims_evidence.npz").exists()


@needs_caltech101
def test_two_job_sweep_through_submitit(tmp_path, monkeypatch):
    monkeypatch.setenv("CNNVIS_CHECKPOINTS", str(tmp_path / "ck"))
    sweep = run_py("--multirun", "hydra/launcher=local", "experiment=train", "smoke=true", "seed=0,1",
                   f"results_dir={tmp_path}")
    assert sweep.returncode == 0, sweep.stderr[-3000:]
    summary = pd.read_csv(tmp_path / "train" / "multirun-smoke" / "summary.csv")
    assert sorted(summary.seed.tolist()) == [0, 1] and summary.val_top1.between(0, 1).all()
    assert list((tmp_path / "train" / "multirun-smoke" / ".submitit").iterdir())  # submitit's job folders


def test_held_out_split_is_disjoint_per_class_and_seeded():
    labels = np.repeat(np.arange(4), 30)
    held_out = np.arange(0, 120, 2)  # 15 held-out images per class
    val, test = split_held_out(labels, held_out, 5, seed=3)
    assert not set(val) & set(test) and sorted({*val, *test}) == held_out.tolist()
    assert np.bincount(labels[val]).tolist() == [5] * 4 and np.bincount(labels[test]).tolist() == [10] * 4
    again, _ = split_held_out(labels, held_out, 5, seed=3)
    other, _ = split_held_out(labels, held_out, 5, seed=4)
    assert again.tolist() == val.tolist() and other.tolist() != val.tolist()


@needs_caltech101
def test_train_val_test_sets_are_disjoint_and_keep_the_training_images(tmp_path):
    from omegaconf import OmegaConf

    from cnnvis.config import DatasetConfig

    dataset = DatasetConfig(name="caltech101", root=os.environ["DATA_ROOT"], train_per_class=6, test_per_class=8,
                            resize=36, num_workers=0)
    cfg = OmegaConf.create({"smoke": False, "seed": 0, "cache_dir": str(tmp_path), "model": {"input_size": 32},
                            "dataset": OmegaConf.structured(dataset)})
    keep = {"accordion", "anchor"}.__contains__
    images, train, held_out = train_val_sets(cfg, RunRecord(), class_filter=keep)
    images3, train3, val, test = train_val_test_sets(cfg, RunRecord(), class_filter=keep, val_per_class=3)
    assert train3.idx.tolist() == train.idx.tolist()  # the training images do not change
    assert sorted([*val.idx, *test.idx]) == sorted(held_out.idx) and not set(val.idx) & set(test.idx)
    assert np.bincount(images3.labels[val.idx]).tolist() == [3, 3]
    with pytest.raises(ValueError, match="dataset.test_per_class"):
        train_val_test_sets(cfg, RunRecord(), class_filter=keep, val_per_class=8)


@needs_caltech101
def test_conv1_recipe_search_records_every_epoch_and_resumes_without_retraining(tmp_path, monkeypatch):
    monkeypatch.setenv("CNNVIS_CHECKPOINTS", str(tmp_path / "ck"))
    args = ("experiment=zfnet_conv1_recipes", "smoke=true", f"results_dir={tmp_path}", "experiment.arms=[zfnet]",
            "+experiment.recipes.fast={lr:0.03,filter_rms:0}", "experiment.run_only=[short,fast]")
    first = run_py(*args)
    assert first.returncode == 0, first.stderr[-3000:]
    out = tmp_path / "zfnet_conv1_recipes"
    curves, runs = pd.read_csv(out / "curves.csv"), pd.read_csv(out / "runs.csv")
    assert curves.groupby("recipe").epoch.apply(list).to_dict() == {"short": [1, 2], "fast": [1, 2]}
    assert curves.structured_share.between(0, 1).all() and (curves.train_minutes.diff().fillna(1) != 0).all()
    assert runs.recipe.tolist() == ["short", "fast"] and not runs.passed.any()  # 2 epochs: the gate says no
    assert "lr 0.03" in (out / "curves.md").read_text() and "filter RMS cap off" in (out / "curves.md").read_text()
    again = run_py(*args)  # finished runs are read back, not retrained: the same rows, each epoch's kept
    assert again.returncode == 0, again.stderr[-3000:]
    pd.testing.assert_frame_equal(pd.read_csv(out / "runs.csv"), runs)
    pd.testing.assert_frame_equal(pd.read_csv(out / "curves.csv"), curves)
    typo = run_py("experiment=zfnet_conv1_recipes", "smoke=true", "experiment.run_only=[shortt]")
    assert typo.returncode != 0 and "the recipes are short, no_decay_high_lr, no_cap" in typo.stderr
    typo = run_py("experiment=zfnet_conv1_recipes", "smoke=true", "+experiment.recipes.bad={lrr:0.1}",
                  "experiment.run_only=[bad]")
    assert typo.returncode != 0 and "experiment.recipes.bad sets ['lrr']; a recipe's keys are classes" in typo.stderr


def test_a_recipe_keeps_the_presets_values_it_does_not_name():
    from omegaconf import OmegaConf

    from experiments.zfnet_conv1_recipes import Recipe, resolve

    cfg = OmegaConf.create({"experiment": {"classes": 10, "width": 0.25, "seeds": [0],
                                           "train": {"epochs": 30, "lr": 0.01, "filter_rms": 0.1}},
                            "dataset": {"train_per_class": 80}, "model": {"input_size": 112}})
    same = resolve(cfg, Recipe())
    assert (same.classes, same.train_per_class, same.input_size, same.width) == (10, 80, 112, 0.25)
    assert (same.train.epochs, same.train.lr, same.train.filter_rms) == (30, 0.01, 0.1)
    changed = resolve(cfg, Recipe(classes=0, lr=0.03, filter_rms=0, seeds=[0, 1, 2]))
    assert changed.classes is None and changed.train.lr == 0.03 and changed.train.filter_rms is None
    assert changed.train.epochs == 30 and same.seeds == [0] and changed.seeds == [0, 1, 2]
