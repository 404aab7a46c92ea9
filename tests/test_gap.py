"""GAP surgery (CAM paper Sec. 3): trunk weights kept, the paper's layers added, CAM exact on the result."""

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from cnnvis.cams import CAM, GradCAM
from cnnvis.claims import COLUMNS, CONTRADICTED, INCONCLUSIVE, REPRODUCED, claims_frame, recomputed_verdict
from cnnvis.gap import build_gap_model, count_parameters, gap_network
from cnnvis.models import alexnet, vgg16, zfnet
from conftest import needs_caltech101, run_py
from cnnvis.gap_scratch import seed_differences, summary_table, table1_claims


@pytest.mark.parametrize("builder, last, size", [(alexnet, "conv5", 112), (zfnet, "conv5", 112), (vgg16, "conv5_3", 64)])
def test_surgery_keeps_the_trunk_and_adds_the_papers_layers(builder, last, size):
    torch.manual_seed(0)
    model = builder(num_classes=10, input_size=size) if builder is not vgg16 else builder(input_size=size)
    gap = gap_network(model, num_classes=7)
    trunk = {k: v for k, v in model.state_dict().items() if k.startswith("features.")}
    kept = {k: v for k, v in gap.state_dict().items() if k in trunk}
    assert kept and all(torch.equal(kept[k], trunk[k]) for k in kept)
    last_path = model.layers[last].split(".")[1]
    assert list(gap.features._modules)[-3] == last_path  # cut right after conv5's ReLU: pool5 and the fcs are gone
    added = gap.features.gap_conv1
    assert (added.out_channels, added.kernel_size, added.stride, added.padding) == (1024, (3, 3), (1, 1), (1, 1))
    assert isinstance(gap.pool[0], nn.AdaptiveAvgPool2d) and gap.head.in_features == 1024 and gap.head.out_features == 7
    x = torch.rand(2, 3, size, size)
    with torch.no_grad():
        conv5 = model.features[: list(model.features._modules).index(last_path) + 1](model.normalize(x))
        assert torch.equal(gap.features[: -2](gap.normalize(x)), conv5)  # same conv5 maps (13x13 at 224 px)
    assert gap(x).shape == (2, 7)
    gap.features[0].weight.data.zero_()
    assert model.features[0].weight.abs().sum() > 0  # the original is untouched


def test_alexnet_star_gap_has_two_added_convs_and_fewer_parameters():
    plain = alexnet(num_classes=101, input_size=112)
    one, two = build_gap_model("alexnet-gap", 101, 112), build_gap_model("alexnet*-gap", 101, 112)
    assert [n for n in two.features._modules if n.startswith("gap_conv")] == ["gap_conv1", "gap_conv2"]
    assert two.layers["cam"] == "features.gap_relu2"
    extra = 1024 * 1024 * 9 + 1024
    assert count_parameters(two) - count_parameters(one) == extra
    assert count_parameters(one) < count_parameters(plain) / 2  # the fc layers dominate AlexNet
    with pytest.raises(KeyError, match="alexnet\\*-gap"):
        build_gap_model("resnet-gap")


def test_cam_is_exact_on_a_gap_network_and_equals_gradcam_up_to_scale():
    torch.manual_seed(0)
    gap = build_gap_model("alexnet-gap", 5, 112).eval()
    x = torch.rand(3, 3, 112, 112)
    with CAM(gap, "cam") as cam, GradCAM(gap, "cam", relu=False) as grad_cam:
        a, b = cam.attribute(x, [0, 1, 4], False), grad_cam.attribute(x, [0, 1, 4], False)
        logits = gap(x)
    head = gap.head
    torch.testing.assert_close(a.mean((1, 2)) + head.bias[[0, 1, 4]], logits[[0, 1, 2], [0, 1, 4]], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(a, b * a.shape[-1] * a.shape[-2], atol=1e-6, rtol=1e-4)


@needs_caltech101
def test_cam_gap_end_to_end(tmp_path):
    result = run_py("experiment=cam_gap_scratch", "smoke=true", "model.input_size=64", f"results_dir={tmp_path}",
                    f"experiment.checkpoint_root={tmp_path / 'ckpt'}", "experiment.variants=[alexnet,alexnet-gap]",
                    timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    table = pd.read_csv(tmp_path / "cam_gap" / "gap_vs_original.csv")
    assert list(table["network"]) == ["alexnet", "alexnet-gap"]
    claims = pd.read_csv(tmp_path / "cam_gap" / "claims.csv")
    assert list(claims.columns) == COLUMNS and (claims["n"] == 3).all()  # three seeds by default
    runs = pd.read_csv(tmp_path / "cam_gap" / "runs.csv")
    assert not runs["trained_enough"].any() and runs["gate"].str.contains("fewer than 6").all()  # 2 smoke epochs
    assert (claims["verdict"] == "not comparable").all() and claims["reason"].str.contains("undertrained: ").all()
    assert table["parameters_M"][1] < table["parameters_M"][0] and table["paper_top1_err_imagenet"].notna().all()
    assert (tmp_path / "cam_gap" / "training_curves.png").stat().st_size > 1000


def gap_runs(base_err, gap_err, star_err):
    """Per-run rows of cam_gap for seeds 0, 1, 2 (top-1 errors in points)."""
    rows = []
    for name, errs in [("alexnet", base_err), ("alexnet-gap", gap_err), ("alexnet*-gap", star_err)]:
        rows += [{"network": name, "seed": s, "test_top1_err": e} for s, e in enumerate(errs)]
    return pd.DataFrame(rows)


def test_gap_cost_is_decided_on_the_interval_over_seeds_not_on_one_positive_mean():
    # per-seed costs +2, -1, +1.5 points: positive on average, but the t interval over 3 seeds spans 0
    runs = gap_runs([50, 50, 50], [52, 49, 51.5], [60, 60, 60])
    gap, star = table1_claims(runs)
    assert gap.verdict == INCONCLUSIVE and gap.n == 3 and gap.reason.startswith("n < 5")
    assert gap.ours.startswith("0.8 [") and "(n = 3)" in gap.ours and "paper" not in gap.rule
    assert gap.paper_number == "+8.5 points (ImageNet)"
    assert star.verdict == CONTRADICTED  # alexnet*-gap is worse on every seed: the opposite of the paper's recovery
    np.testing.assert_allclose(seed_differences(runs, "alexnet-gap", "alexnet"), [2, -1, 1.5])


def test_gap_cost_reproduced_when_every_seed_agrees_and_one_seed_never_decides():
    runs = gap_runs([50, 51, 49], [53, 53.5, 52], [51, 52, 50])
    gap, star = table1_claims(runs)
    assert gap.verdict == REPRODUCED and star.verdict == REPRODUCED
    assert recomputed_verdict(gap.evidence, ()) == REPRODUCED and gap.evidence[0].seed != star.evidence[0].seed
    one = table1_claims(runs[runs.seed == 0])[0]
    assert one.verdict == INCONCLUSIVE and one.ours == "3.0 (n = 1)"  # one seed: no interval, no verdict
    assert list(claims_frame([gap, star]).columns) == COLUMNS
    assert table1_claims(runs[runs.network == "alexnet-gap"]) == []  # a GAP network alone: nothing to compare


def test_summary_prints_n_and_never_plus_minus_zero():
    runs = gap_runs([50, 51, 49], [53, 53.5, 52], [51, 52, 50]).assign(
        map="-", parameters_M=1.0, test_top5_err=10.0, loc_err_top1=np.nan, loc_err_gt_known=np.nan, boxed_test_images=0)
    table = summary_table(runs)
    assert table["test_top1_err"][0] == "50.0 [47.5, 52.5] (n = 3)"
    assert table["test_top5_err"][0] == "10.0 [10.0, 10.0] (n = 3)" and table["loc_err_top1"][0] == "-"
    assert "±" not in table.to_string()
    one = summary_table(runs[runs.seed == 0])
    assert one["test_top1_err"][0] == "50.0 (n = 1)"
