import pytest
import torch
from torch import nn
from torch.nn import functional as F

from cnnvis.models import build_model
from cnnvis.rectifiers import RULES, rectifier_rule


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


# y = v . r(x) with r a rectifier, by hand: x = [1, 2, 3, -4] gives r(x) = [1, 2, 3, 0] and y = 11;
# d y / d x is v where the unit is active (the plain gradient), only its positive part there (guided), or the
# positive part of v wherever the unit is (deconvnet: the forward pass is ignored)
V, X = torch.tensor([2.0, -3.0, 5.0, 7.0]), torch.tensor([1.0, 2.0, 3.0, -4.0])
BY_HAND = {"gradient": [2.0, -3.0, 5.0, 0.0], "guided": [2.0, 0.0, 5.0, 0.0], "deconvnet": [2.0, 0.0, 5.0, 7.0]}
SPELLINGS = {
    "torch.clamp(h, 0, 6)": lambda h: torch.clamp(h, 0, 6), "h.clamp(min=0)": lambda h: h.clamp(min=0),
    "torch.clip(h, 0, 6)": lambda h: torch.clip(h, 0, 6), "h.clamp_min(0)": lambda h: h.clamp_min(0),
    "F.hardtanh(h, 0, 6)": lambda h: F.hardtanh(h, 0.0, 6.0),
}
IN_PLACE = {  # the network reads h after the call: the rectifier's side effect must happen
    "h.clamp_(0, 6)": lambda h: h.clamp_(0, 6), "torch.clamp_min_(h, 0)": lambda h: torch.clamp_min_(h, 0),
    "F.hardtanh_(h, 0, 6)": lambda h: F.hardtanh_(h, 0.0, 6.0), "F.relu6(h, inplace=True)": lambda h: F.relu6(h, True),
    "nn.ReLU6(inplace=True)": nn.ReLU6(inplace=True), "nn.ReLU(inplace=True)": nn.ReLU(inplace=True),
    "F.relu_(h)": F.relu_, "h.relu_()": torch.Tensor.relu_,
}


def by_hand_case(rectify, rule, in_place):
    x = X.clone().requires_grad_(True)
    with rectifier_rule(rule) as r:
        h = x * 1.0  # a non-leaf, as a layer's output is
        out = rectify(h)
        y = (V * (h if in_place else out)).sum()
        (grad,) = torch.autograd.grad(y, x)
    return float(y.detach()), grad.tolist(), r.calls


@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("spelling", [*SPELLINGS, *IN_PLACE])
def test_clamp_hardtanh_and_in_place_rectifiers_follow_the_rule_by_hand(spelling, rule):
    in_place = spelling in IN_PLACE
    y, grad, calls = by_hand_case({**SPELLINGS, **IN_PLACE}[spelling], rule, in_place)
    assert (y, grad, calls) == (11.0, BY_HAND[rule], 1)


@pytest.mark.parametrize("clip", [lambda h: h.clamp(-1, 1), lambda h: F.hardtanh(h), lambda h: h.clamp(max=6),
                                  lambda h: h.clamp(min=torch.zeros(4))])
def test_clipping_not_from_zero_keeps_its_plain_gradient(clip):
    x = X.clone().requires_grad_(True)
    (expected,) = torch.autograd.grad((V * clip(x * 1.0)).sum(), x)
    for rule in ("guided", "deconvnet"):
        _, grad, calls = by_hand_case(clip, rule, in_place=False)
        assert calls == 0 and grad == expected.tolist()


class HandReLU6Net(nn.Module):
    """conv -> ReLU6 -> conv -> ReLU6 -> GAP -> linear, the ReLU6 written as ``spell`` (a module or a clamp)."""

    def __init__(self, spell):
        super().__init__()
        torch.manual_seed(3)
        self.c1, self.c2, self.fc = nn.Conv2d(3, 6, 3, padding=1), nn.Conv2d(6, 6, 3, padding=1), nn.Linear(6, 4)
        self.spell = spell

    def forward(self, x):
        return self.fc(self.spell(self.c2(self.spell(self.c1(x) * 4))).mean((2, 3)))


@pytest.mark.parametrize("method", ["GuidedBackprop", "Deconvnet"])
def test_a_relu6_written_as_clamp_gets_the_rule_of_nn_relu6(method):
    from cnnvis import cams

    x = torch.rand(2, 3, 8, 8)
    maps = {}
    for name, spell in (("module", nn.ReLU6()), ("clamp", lambda h: h.clamp(0, 6)), ("clamp_", lambda h: h.clamp_(0, 6))):
        with getattr(cams, method)(HandReLU6Net(spell).eval()) as attribution:
            maps[name] = attribution.attribute(x, 1)
    xg = x.clone().requires_grad_(True)
    (plain,) = torch.autograd.grad(HandReLU6Net(nn.ReLU6())(xg)[:, 1].sum(), xg)
    assert not torch.allclose(maps["module"], plain, atol=1e-6)  # the rule changes this network's signal
    torch.testing.assert_close(maps["clamp"], maps["module"])
    torch.testing.assert_close(maps["clamp_"], maps["module"])


def test_gradient_rule_keeps_each_ops_own_gradient_at_its_bounds():
    """torch.clamp passes the gradient at its bounds (x = 0, x = 6), relu does not at 0: the gradient rule is each
    op's own backward, unchanged."""
    at_bounds = torch.tensor([0.0, 6.0, 3.0, 0.0])
    for rectify in (lambda h: h.clamp(0, 6), F.relu, lambda h: F.hardtanh(h, 0.0, 6.0)):
        x = at_bounds.clone().requires_grad_(True)
        (plain,) = torch.autograd.grad((V * rectify(x * 1.0)).sum(), x)
        x = at_bounds.clone().requires_grad_(True)
        with rectifier_rule("gradient") as r:
            (ruled,) = torch.autograd.grad((V * rectify(x * 1.0)).sum(), x)
        assert r.calls == 1 and torch.equal(ruled, plain)
