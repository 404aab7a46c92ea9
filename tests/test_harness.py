"""The Hydra harness: every config composes, bad configs fail loudly, runs write their results."""

import json

import pandas as pd
import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from omegaconf.errors import ConfigKeyError, ValidationError

from cnnvis.config import REPO, check_config, experiment_names, register_configs
from cnnvis.results import Results, markdown_table
from conftest import run_py

register_configs()


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
    sweep = tmp_path / "filters" / "multirun"
    jobs = sorted(p.name for p in sweep.iterdir() if p.is_dir())
    assert jobs == ["experiment.maps_per_layer=2", "experiment.maps_per_layer=3"]
    summary = pd.read_csv(sweep / "summary.csv")
    assert sorted(summary["experiment.maps_per_layer"]) == [2, 3] and "wall_time_s" in summary
