import pytest
import torch
from torch import nn
from torch.nn import functional as F

from cnnvis.models import build_model
from cnnvis.rectifiers import rectifier_rule


class Functional(nn.Module):
    """relu through every spelling a model may use."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(6, 6), nn.Linear(6, 6)
        self.relu6 = nn.ReLU6()

    def forward(self, x):
        x = F.relu(self.a(x))
        x = torch.relu(x * 1.5 - 0.2)
        x = self.relu6(self.b(x)).relu()
        return F.relu6(x * 3).sum(1)


def input_grad(model, x, rule):
    x = x.clone().requires_grad_(True)
    with rectifier_rule(rule) as r:
        model(x).sum().backward()
    return x.grad, r.calls


@pytest.mark.parametrize("rule", ["gradient", "deconvnet", "guided"])
def test_every_rectifier_spelling_is_caught(rule):
    torch.manual_seed(0)
    model = Functional()
    _, calls = input_grad(model, torch.randn(4, 6), rule)
    assert calls == 5


def test_gradient_rule_is_the_plain_gradient():
    torch.manual_seed(0)
    model, x = Functional(), torch.randn(8, 6)
    xg = x.clone().requires_grad_(True)
    model(xg).sum().backward()
    ours, _ = input_grad(model, x, "gradient")
    assert torch.allclose(ours, xg.grad)


def test_rules_by_hand_on_one_unit():
    # y = relu(w2 * relu(w1 * x)) with w2 < 0: guided and deconvnet block the negative signal
    x = torch.tensor([[1.0], [-1.0]])
    net = nn.Sequential(nn.Linear(1, 1, bias=False), nn.ReLU(), nn.Linear(1, 1, bias=False))
    net[0].weight.data.fill_(2.0)
    net[2].weight.data.fill_(-3.0)
    g_plain, _ = input_grad(net, x, "gradient")
    g_guided, _ = input_grad(net, x, "guided")
    g_deconv, _ = input_grad(net, x, "deconvnet")
    assert g_plain.flatten().tolist() == [-6.0, 0.0]
    assert g_guided.flatten().tolist() == [0.0, 0.0]  # signal -3 at the relu is negative: blocked
    assert g_deconv.flatten().tolist() == [0.0, 0.0]
    net[2].weight.data.fill_(3.0)
    assert input_grad(net, x, "guided")[0].flatten().tolist() == [6.0, 0.0]  # x=-1: unit inactive
    assert input_grad(net, x, "deconvnet")[0].flatten().tolist() == [6.0, 6.0]  # forward mask ignored


def test_guided_backprop_differs_from_the_gradient_on_a_relu6_network():
    model = build_model("efficientnet_lite0", pretrained=True).eval()
    x = torch.rand(1, 3, 96, 96)
    plain, _ = input_grad(model, x, "gradient")
    guided, calls = input_grad(model, x, "guided")
    assert calls > 30 and not torch.allclose(plain, guided)


def test_unknown_rule():
    with pytest.raises(ValueError, match="guided"):
        rectifier_rule("guidd")
