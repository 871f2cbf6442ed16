"""RAP (relative attributing propagation): hand-worked cases of its rules, conservation and sign separation."""

import pytest
import torch
from torch import nn

from apkit.attribution import RAP
from apkit.attribution._graph import LinearLayer
from apkit.attribution.rap import RAPRules

pytestmark = pytest.mark.usefixtures("one_thread")


def test_rap_hand_worked_two_layer_example():
    """x = (1, 2) -> Linear W1 -> ReLU -> Linear W2 + b (target 0), worked out from METHOD §6.4.

    Forward: h = ReLU(W1 x) = (2 - 1, -1 + 2) = (1, 1); z_0 = 3 - 1 + 0.5 = 2.5.
    (a) top layer: C_pp = (3, 0), C_pn = (0, -1); Pos = 3, Neg = -1; bias shares b+ = 0.5*3/2 = 0.75,
        b- = 0.5*(-1)/2 = -0.25 spread over C_pp and C_pn: C = (3.75, -1.25), sum 2.5 = z_0;
        A = |C| * 2.5 / 5 = (1.875, 0.625).
    (b) linear layer, R = (15/8, 5/8) >= 0, u = x = (1, 2):
        unit 1 (w = (2, -0.5)): a = (2, 0), b = (0, 1), Za1 = 2, Za2 = 1;
        unit 2 (w = (-1, 1)):   a = (0, 2), b = (1, 0), Za1 = 2, Za2 = 1;
        C_1 = 2 * (15/8) / 2 + 1 * (5/8) / 3 = 25/12;  C_2 = 1 * (15/8) / 3 + 2 * (5/8) / 2 = 5/4;
        excess = 25/12 + 15/12 - 5/2 = 5/6 over 2 units: C = (25/12 - 5/12, 15/12 - 5/12) = (5/3, 5/6).
    """
    net = nn.Sequential(nn.Flatten(), nn.ReLU(), nn.Linear(2, 2, bias=False), nn.ReLU(), nn.Linear(2, 2))
    with torch.no_grad():
        net[2].weight.copy_(torch.tensor([[2.0, -0.5], [-1.0, 1.0]]))
        net[4].weight.copy_(torch.tensor([[3.0, -1.0], [1.0, 1.0]]))
        net[4].bias.copy_(torch.tensor([0.5, 0.0]))
    x = torch.tensor([1.0, 2.0]).view(1, 2, 1, 1)
    hidden = RAP(net, layer="3").attribute(x, torch.tensor([0])).flatten()
    torch.testing.assert_close(hidden, torch.tensor([15 / 8, 5 / 8]))
    relevance = RAP(net).attribute(x, torch.tensor([0])).flatten()
    torch.testing.assert_close(relevance, torch.tensor([5 / 3, 5 / 6]))


@pytest.mark.parametrize("module,expected", [
    # Conv: unit 2's negative relevance goes to its negative contributors only (there are none):
    # C = (1*1/1, 1*1/2) = (1, 1/2); excess 3/2 - 0 over 2 units -> (1/4, -1/4).
    (nn.Conv2d(2, 2, 1, bias=False), [0.25, -0.25]),
    # Linear: it goes to the positive contributors: C = (1 - 2/3, 1/2 - 1/3) = (1/3, 1/6);
    # excess 1/2 over 2 units -> (1/12, -1/12).
    (nn.Linear(2, 2, bias=False), [1 / 12, -1 / 12]),
])
def test_rap_rule_splits_negative_relevance_and_shifts(module, expected):
    """u = (1, 1), W = [[1, -1], [2, 1]], incoming R = (1, -1); unit 1: a = (1, 0), b = (0, 1),
    Za1 = Za2 = 1; unit 2: a = (2, 1), b = (0, 0), Za1 = 3, Za2 = 0."""
    with torch.no_grad():
        module.weight.copy_(torch.tensor([[1.0, -1.0], [2.0, 1.0]]).view_as(module.weight))
    layer = LinearLayer("layer", module, module.weight.detach(), None, first=False, top=False)
    shape = (1, 2, 1, 1) if isinstance(module, nn.Conv2d) else (1, 2)
    r_in = RAPRules().linear(layer, torch.ones(shape), torch.tensor([0]), torch.tensor([1.0, -1.0]).view(shape))
    torch.testing.assert_close(r_in.flatten(), torch.tensor(expected))


@pytest.mark.parametrize("arch", ["vgg16", "resnet18"])
def test_rap_conserves_and_separates_positive_and_negative_relevance(arch, request):
    model = request.getfixturevalue(arch)
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(7))
    pairs = torch.tensor([[0, 4], [1, 6]])
    relevance = RAP(model).attribute(x, pairs)
    logits = model(x)[pairs[:, 0], pairs[:, 1]].detach()
    # Step (a) conserves the logit, every later step conserves relevance after its shift.
    torch.testing.assert_close(relevance.sum((1, 2, 3)), logits, rtol=1e-3, atol=1e-4)
    maps = relevance.sum(1) * logits.sign().view(-1, 1, 1)
    assert bool((maps > 0).any((1, 2)).all()) and bool((maps < 0).any((1, 2)).all())
    heatmap = RAP(model).heatmap(x, pairs)
    torch.testing.assert_close(heatmap, maps.clamp(min=0))
