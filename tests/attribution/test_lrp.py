"""LRP alpha1-beta0 against zennit, the conservation of the logit and a hand-worked case."""

import pytest
import torch
import torch.nn.functional as F
from helpers import relative_error
from torch import nn
from zennit.attribution import Gradient
from zennit.composites import SpecialFirstLayerMapComposite
from zennit.layer import Sum
from zennit.rules import Norm, Pass, ZBox, ZPlus
from zennit.torchvision import ResNetCanonizer
from zennit.types import Activation, AvgPool, BatchNorm, Convolution, Linear

from apkit.attribution import LRP

STABILIZER = 1e-12  # zennit adds it to denominators; apkit divides exactly (0 where 0)


pytestmark = pytest.mark.usefixtures("one_thread")

# (model fixture, zennit canonizer); ResNet-18 keeps its BatchNorms, so apkit's own folding is compared too.
ARCHITECTURES = [("vgg16_merged", None), ("resnet18", ResNetCanonizer)]


def zennit_lrp(model, x, classes, canonizer):
    low, high = x.amin((1, 2, 3), keepdim=True), x.amax((1, 2, 3), keepdim=True)
    composite = SpecialFirstLayerMapComposite(
        layer_map=[
            (Activation, Pass()), (Sum, Norm(stabilizer=STABILIZER)), (AvgPool, Norm(stabilizer=STABILIZER)),
            (BatchNorm, Pass()), (Linear, ZPlus(stabilizer=STABILIZER, zero_params="bias")),
        ],
        first_map=[(Convolution, ZBox(low, high, stabilizer=STABILIZER))],
        canonizers=[canonizer()] if canonizer else [],
    )
    with Gradient(model, composite) as attributor:
        _, relevance = attributor(x.clone(), lambda out: out * F.one_hot(classes, out.shape[1]))
    return relevance


@pytest.mark.parametrize("arch,canonizer", ARCHITECTURES)
def test_lrp_equals_zennit_zplus_with_zbox_and_merged_batchnorm(arch, canonizer, request):
    model = request.getfixturevalue(arch)
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    classes = torch.tensor([1, 7])
    ours = LRP(model).attribute(x, classes)
    reference = zennit_lrp(model, x, classes, canonizer)
    assert relative_error(ours, reference) < 1e-4


def test_lrp_conserves_the_logit_of_a_bias_free_network():
    torch.manual_seed(3)
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 8, 3, padding="same", bias=False), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
        nn.Linear(32, 5, bias=False),
    ).eval()
    x = torch.randn(4, 3, 16, 16)
    pairs = torch.tensor([[0, 0], [0, 3], [1, 1], [2, 4], [3, 2]])
    relevance = LRP(net).attribute(x, pairs)
    logits = net(x)[pairs[:, 0], pairs[:, 1]].detach()
    torch.testing.assert_close(relevance.sum((1, 2, 3)), logits, rtol=1e-4, atol=1e-6)
    # The evaluation map flips the sign of a negative logit: its sum is |z|.
    heatmap = LRP(net).heatmap(x, pairs)
    torch.testing.assert_close(heatmap.sum((1, 2)), logits.abs(), rtol=1e-4, atol=1e-6)


def test_lrp_zplus_handles_inputs_of_both_signs_and_custom_bounds():
    """A layer fed by negative values gets the x-w- term (Captum's weight-only clamp would not)."""
    torch.manual_seed(4)
    net = nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.Linear(3, 2)).eval()
    x = torch.randn(1, 4, 1, 1)
    ours = LRP(net).attribute(x, torch.tensor([1]), first_layer="same").flatten()
    # By hand: z+ rule at both layers, the hidden layer's input has both signs.
    w1, w2 = net[1].weight.detach(), net[2].weight.detach()
    h = net[1](x.flatten(1)).detach()[0]
    z = (h @ w2.T + net[2].bias)[1].detach()
    def zplus(inp, w, r):
        contributions = inp.clamp(min=0)[None] * w.clamp(min=0) + inp.clamp(max=0)[None] * w.clamp(max=0)
        return (contributions / contributions.sum(1, keepdim=True) * r[:, None]).sum(0)
    r_hidden = zplus(h, w2, torch.tensor([0.0, z]))
    expected = zplus(x.flatten(), w1, r_hidden)
    torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-6)
    # z^B with explicit bounds equals z^B with the same bounds given per image.
    image = torch.rand(2, 3, 8, 8)
    conv_net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(144, 3)).eval()
    given = LRP(conv_net).attribute(image, torch.tensor([0, 2]), bounds=(0.0, 1.0))
    assert abs(float(given.sum()) - float(conv_net(image)[[0, 1], [0, 2]].sum().detach())) < 1e-4


@pytest.mark.parametrize("module", [nn.Conv2d(6, 4, 3, padding=1, bias=False), nn.Conv2d(6, 6, 3, groups=6, bias=False),
                                    nn.Conv2d(6, 4, 1, bias=False), nn.Linear(6, 4, bias=False)])
def test_zplus_with_inputs_of_both_signs_is_the_written_out_rule(module):
    # R_i = x+_i sum_j w+_ij R_j / z_j + x-_i sum_j w-_ij R_j / z_j, each sum its own transpose (autograd's).
    from apkit.attribution._graph import LinearLayer
    from apkit.attribution.lrp import LRPRules

    torch.manual_seed(0)
    weight = module.weight.detach()
    layer = LinearLayer("m", module, weight, None, False, False)
    x = torch.randn(3, 6, 7, 7) if isinstance(module, nn.Conv2d) else torch.randn(3, 6)
    xp, xn, wp, wn = x.clamp(min=0), x.clamp(max=0), weight.clamp(min=0), weight.clamp(max=0)
    z = layer.forward(xp, wp) + layer.forward(xn, wn)
    relevance = torch.randn(z.shape)
    s = torch.where(z > 0, relevance / z, 0.0)

    def transpose(w):
        inputs = torch.zeros_like(x, requires_grad=True)
        return torch.autograd.grad(layer.forward(inputs, w), inputs, s)[0]

    expected = xp * transpose(wp) + xn * transpose(wn)
    ours = LRPRules().linear(layer, x, slice(None), relevance)
    assert relative_error(ours, expected) < 1e-6
