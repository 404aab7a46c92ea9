"""Every experiment that needs no training runs in smoke mode on other architectures than the default, with no
layer override: each reads its layers from the model's roles (random weights, small images, in-process)."""

import pytest
from hydra import compose, initialize_config_dir

from cnnvis.config import REPO, register_configs
from cnnvis.results import Results
from cnnvis.run_record import RunRecord
from conftest import needs_caltech101, needs_imagenet_val
from experiments import experiment_configs

register_configs(experiment_configs())

# (experiment, its extra overrides, the mark its data needs)
EXPERIMENTS = [
    ("zfnet_occlusion", ["dataset=samples", "experiment.caltech=false"], None),
    ("zfnet_invariance", ["dataset=samples"], None),
    ("zfnet_deconv", ["dataset=samples"], None),
    ("rcnn_patches", ["dataset=samples"], None),
    ("filters", ["dataset=samples"], None),
    ("activation_max", ["dataset=samples", "experiment.steps=2"], None),
    ("zfnet_correspondence", [], needs_imagenet_val),
    # CAM itself needs a GAP network (resnet18, efficientnet_lite0); on ZFNet it fails saying so
    ("cam_methods", ["experiment.methods=[gradcam,layercam_fused,saliency]"], needs_caltech101),
]
# random weights, 64 px (activation_max's smoke size, which ZFNet's fc6 is then sized for)
ARCHITECTURES = {"resnet18": 64, "zfnet": 64}


def experiment_cases():
    for name, overrides, mark in EXPERIMENTS:
        for arch, size in ARCHITECTURES.items():
            marks = [mark, pytest.mark.real_data] if mark else []
            yield pytest.param(name, arch, [f"model.input_size={size}", *overrides], id=f"{name}-{arch}", marks=marks)


@pytest.mark.parametrize("name,arch,overrides", experiment_cases())
def test_experiment_smoke_runs_on_the_models_roles(name, arch, overrides, tmp_path):
    import importlib

    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[f"experiment={name}", f"model={arch}", "smoke=true",
                                                        f"results_dir={tmp_path}",
                                                        *overrides])
    importlib.import_module(f"experiments.{name}").main(cfg, Results(tmp_path), RunRecord())
    assert list(tmp_path.glob("*.png"))
    # random weights ran: no table may say otherwise
    assert not [p.name for p in tmp_path.glob("*.md") if "ImageNet weights" in p.read_text()]
