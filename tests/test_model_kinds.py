"""Experiments on models they were not tuned for: each runs, or refuses a kind of network it cannot take before
loading anything, in one line (the full model x experiment matrix is tests/test_model_matrix.py, not in CI)."""

import numpy as np
import pytest
from hydra import compose, initialize_config_dir

from cnnvis.config import REPO, check_model_kind, register_configs, unread_model_override
from cnnvis.gap import build_gap_model, feeds_gap_head
from cnnvis.models import CNN, MODEL_KINDS, TRANSFORMER, UnsupportedModelError, build_model, layer_role
from cnnvis.results import Results
from cnnvis.run_record import RunRecord
from conftest import needs_caltech101, run_py
from experiments import experiment_configs, experiment_model_kinds, experiment_names

register_configs(experiment_configs())
TAKES = experiment_model_kinds()


def composed(*overrides):
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


@pytest.mark.parametrize("model", sorted(MODEL_KINDS))
def test_every_experiment_takes_a_model_or_says_which_in_one_line(model):
    taken = set()
    for experiment in experiment_names():
        try:
            check_model_kind(experiment, model, TAKES)
            taken.add(experiment)
        except UnsupportedModelError as err:
            said = str(err)
            assert "\n" not in said and f"{model} is a {MODEL_KINDS[model]}" in said and "(model=" in said
            assert "use experiment=cam_beyond" in said  # cam_beyond takes every kind, in model= or its own keys
    own_networks = {"caltech_transfer", "resnet18_finetune", "zfnet_arch_ablation", "zfnet_conv1_ablation",
                    "zfnet_conv1_recipes"}
    expected = {CNN: set(experiment_names()), TRANSFORMER: own_networks | {"cam_beyond", "cam_methods", "explain"}}
    assert taken == expected.get(MODEL_KINDS[model], own_networks)


def test_a_transformer_on_a_cnn_experiment_exits_2_in_one_line_before_loading(tmp_path):
    result = run_py("experiment=zfnet_occlusion", "model=vit_b_16", "smoke=true", "threads=1",
                    f"results_dir={tmp_path}", "dataset.root=/nonexistent")  # data would fail later: no data read
    assert result.returncode == 2 and "Traceback" not in result.stderr
    said = result.stdout.strip().splitlines()[-1]
    assert "[ERROR]" in said and "zfnet_occlusion needs a CNN classifier" in said
    assert "vit_b_16 is a transformer classifier: use experiment=cam_beyond" in said
    assert not (tmp_path / "zfnet_occlusion").exists()


def test_an_unknown_model_name_is_a_one_line_error():
    with pytest.raises(UnsupportedModelError, match="unknown model 'vgg'; available: alexnet"):
        check_model_kind("zfnet_occlusion", "vgg", TAKES)


def test_cam_is_exact_only_where_global_average_pooling_and_the_head_alone_follow():
    takes = {name: feeds_gap_head(m, layer_role(m, "last_conv"))
             for name in ["alexnet", "zfnet", "resnet18", "vgg16", "efficientnet_lite0", "swin_t"]
             for m in [build_model(name, pretrained=False, input_size=64)]}
    assert takes == {"alexnet": False, "zfnet": False, "resnet18": True, "vgg16": False,
                     "efficientnet_lite0": True, "swin_t": False}
    gap = build_gap_model("alexnet-gap", input_size=112)
    assert feeds_gap_head(gap, "cam") and not feeds_gap_head(gap, "conv5")


def test_activation_max_runs_a_conv_stack_built_for_another_image_side(tmp_path):
    from experiments.activation_max import main

    # AlexNet's fc6 is sized for model.input_size (224); the smoke run optimizes 64 px images
    cfg = composed("experiment=activation_max", "model=alexnet", "dataset=samples", "smoke=true",
                   "experiment.steps=2", f"results_dir={tmp_path}")
    main(cfg, Results(tmp_path), RunRecord())
    assert list(tmp_path.glob("*.png"))


@needs_caltech101
@pytest.mark.real_data
@pytest.mark.parametrize("arch", ["vgg16", "alexnet"])
def test_the_caltech_head_fits_networks_with_fc_layers(arch):
    from cnnvis.occlusion_measures import caltech_localization

    # the head is fitted on fc7 (4,096 numbers) here, the pooled conv output on a GAP network
    cfg = composed("experiment=zfnet_occlusion", f"model={arch}", "smoke=true")
    model = build_model(arch, pretrained=False, input_size=64).eval()
    loc, n_train, n_prior = caltech_localization(
        model, cfg.dataset.root, 64, cfg.cache_dir, cfg.dataset.num_workers, 3, 2, 0.5, 0.1, cfg.seed,
        np.random.default_rng(0), n_classes=3, size=32, stride=32, batch_size=16, channels_last=False, incremental=True)
    assert len(loc) == 6 and n_train == 9 and loc.sensitive_inside_box.notna().all()


def test_the_cpu_presets_width_on_another_model_is_a_one_line_error():
    from cnnvis.ablations import build_model_at_width

    with pytest.raises(UnsupportedModelError, match="add experiment.width=1.0 for vgg16$"):
        build_model_at_width("vgg16", 10, 64, width=0.25)


def test_a_checkpoint_of_another_architecture_is_a_one_line_error(tmp_path):
    import torch

    path = tmp_path / "zfnet.pt"
    torch.save({"model": build_model("zfnet", 10, pretrained=False, input_size=64).state_dict()}, path)
    with pytest.raises(UnsupportedModelError, match="does not fit model=alexnet at model.input_size=64") as err:
        build_model("alexnet", 10, checkpoint=str(path), input_size=64)
    assert "\n" not in str(err.value)


def test_a_model_given_to_an_experiment_that_builds_its_own_networks_is_named_as_unused():
    said = unread_model_override("zfnet_conv1_ablation", TAKES, ["smoke=true", "model=vgg16"])
    assert said == ("zfnet_conv1_ablation builds its own networks: model=vgg16 is not used (see "
                    "experiments/zfnet_conv1_ablation.py for the keys that choose them)")
    assert unread_model_override("zfnet_conv1_ablation", TAKES, ["model.input_size=64"]) is None
    assert unread_model_override("zfnet_occlusion", TAKES, ["model=vgg16"]) is None  # it runs that model
