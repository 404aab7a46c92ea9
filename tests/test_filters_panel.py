"""cnnvis.plotting.filters reads the Fig. 3 filters from the conv1 ablation's AlexNet-style checkpoint."""

import torch

from cnnvis.ablations import conv1_variant
from cnnvis.plotting.filters import trained_conv1


def test_trained_conv1_takes_the_lowest_seed_checkpoints_11x11_filters(tmp_path):
    for seed in (1, 0):
        torch.manual_seed(seed)
        model = conv1_variant("alexnet_conv1", 4, 112, 0.25)
        run = tmp_path / f"zfnet-alexnet-conv1_caltech101-{seed}abc"
        run.mkdir()
        torch.save({"model": model.state_dict(), "seed": seed, "epoch": 30}, run / "last.pt")
        if seed == 0:
            expected = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d)).weight
    weight, info = trained_conv1(str(tmp_path / "zfnet-alexnet-conv1_caltech101-*/last.pt"))
    assert weight.shape[-2:] == (11, 11) and weight.shape[1] == 3
    assert torch.equal(weight, expected) and info["seed"] == 0 and info["epochs"] == 30
    assert trained_conv1(str(tmp_path / "nothing-*/last.pt")) is None


def test_fig3_is_marked_undertrained_unless_its_run_passed_the_gate(tmp_path):
    import json

    from conftest import run_py

    from cnnvis.gate import Gate, write_gate

    torch.manual_seed(0)
    run = tmp_path / "zfnet-alexnet-conv1_caltech101-0abc"
    run.mkdir()
    torch.save({"model": conv1_variant("alexnet_conv1", 4, 112, 0.25).state_dict(), "seed": 0, "epoch": 2},
               run / "last.pt")
    pattern = f"experiment.alexnet_conv1_checkpoint={tmp_path}/zfnet-alexnet-conv1_caltech101-*/last.pt"
    for gate in (None, Gate(False, "zf seed 0: 2 epoch(s)"), Gate(True, "converged")):
        if gate is not None:
            write_gate(run, gate)
        result = run_py("experiment=filters", "smoke=true", pattern, f"results_dir={tmp_path / 'r'}")
        assert result.returncode == 0, result.stderr[-2000:]
        metrics = json.loads((tmp_path / "r" / "filters" / "run.json").read_text())["metrics"]
        assert metrics["trained_enough"] == (gate is not None and gate.passed)
        assert ("never judged" in metrics["gate"]) == (gate is None)
