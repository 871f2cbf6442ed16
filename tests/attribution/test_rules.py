"""LRP alpha1-beta0, Excitation Backprop and RAP against zennit, closed forms and hand-worked cases."""

import copy

import pytest
import torch
import torch.nn.functional as F
from helpers import calibrate_batchnorm
from torch import nn
from torch.nn.utils import prune
from zennit.attribution import Gradient
from zennit.canonizers import SequentialMergeBatchNorm
from zennit.composites import ExcitationBackprop as ZennitExcitationBackprop
from zennit.composites import SpecialFirstLayerMapComposite
from zennit.layer import Sum
from zennit.rules import Norm, Pass, ZBox, ZPlus
from zennit.torchvision import ResNetCanonizer
from zennit.types import Activation, AvgPool, BatchNorm, Convolution, Linear

from apkit import models
from apkit.attribution import LRP, RAP, ExcitationBackprop
from apkit.attribution._graph import LinearLayer
from apkit.attribution.rap import RAPRules
from apkit.core.modules import get_layer

STABILIZER = 1e-12  # zennit adds it to denominators; apkit divides exactly (0 where 0)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def vgg16():
    torch.manual_seed(0)
    return calibrate_batchnorm(models.create("vgg16_bn", num_classes=10, input_size=64))


@pytest.fixture(scope="module")
def resnet18():
    torch.manual_seed(0)
    return calibrate_batchnorm(models.create("resnet18", num_classes=10))


@pytest.fixture(scope="module")
def vgg16_merged(vgg16):
    """VGG16-BN with every BatchNorm merged into its convolution by zennit and left as an exact identity.

    Max-pooling picks one of two nearly equal values (e.g. the constant output of a channel whose inputs
    are all zero), and folding BatchNorm changes the last bits of the activations; with the merge done
    once, zennit and apkit compute bit-identical activations and break such ties the same way.
    """
    merged = copy.deepcopy(vgg16)
    SequentialMergeBatchNorm().apply(merged)  # the handles are dropped: the merge stays
    for module in merged.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.eps = 0.0
    return merged


# (model fixture, zennit canonizer); ResNet-18 keeps its BatchNorms, so apkit's own folding is compared too.
ARCHITECTURES = [("vgg16_merged", None), ("resnet18", ResNetCanonizer)]


def relative_error(ours, reference):
    """Largest difference per map, relative to that map's largest value."""
    dims = tuple(range(1, reference.dim()))
    return float(((ours - reference).abs().amax(dims) / reference.abs().amax(dims)).max())


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


def zennit_excitation(model, x, classes, layer, canonizer):
    """Zennit's excitation backprop, read at ``layer`` (the gradient there is the winning probability)."""
    store = {}

    def hook(_module, _inputs, output):
        output.register_hook(lambda grad: store.setdefault("p", grad))

    handle = get_layer(model, layer).register_forward_hook(hook)
    try:
        composite = ZennitExcitationBackprop(stabilizer=STABILIZER, zero_params="bias",
                                             canonizers=[canonizer()] if canonizer else [])
        with Gradient(model, composite) as attributor:
            attributor(x.clone().requires_grad_(), F.one_hot(classes, 10).float())
    finally:
        handle.remove()
    return store["p"].sum(1, keepdim=True)


# -- LRP --------------------------------------------------------------------------------------------

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


# -- Excitation Backprop -----------------------------------------------------------------------------

@pytest.mark.parametrize("arch,canonizer,layers", [
    ("vgg16_merged", None, ["features.42", "features.32"]),
    ("resnet18", ResNetCanonizer, ["layer4", "layer3"]),
])
def test_excitation_backprop_equals_zennit(arch, canonizer, layers, request):
    model = request.getfixturevalue(arch)
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(5)).relu()
    classes = torch.tensor([3, 8])
    for layer in layers:
        ours = ExcitationBackprop(model, layer).attribute(x, classes)
        reference = zennit_excitation(model, x, classes, layer, canonizer)
        assert relative_error(ours, reference) < 1e-4, layer
        # A marginal winning probability: it sums to one when it reaches the layer whole.
        torch.testing.assert_close(ours.sum((1, 2, 3)), torch.ones(2), rtol=1e-4, atol=1e-4)


def test_excitation_backprop_closed_form_at_the_paper_layer(vgg16):
    """Paper layer (ReLU before the last max-pool): MWP over the pooled features, routed to the arg-max."""
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(6))
    classes = torch.tensor([2, 5])
    with torch.no_grad():
        a = vgg16.features[:43](x)
        pooled, where = F.max_pool2d(a, 2, return_indices=True)
        w = vgg16.classifier[1].weight[classes].view(2, *pooled.shape[1:])

    def routed(weights):
        p = pooled * weights
        p = p / p.sum((1, 2, 3), keepdim=True)
        return torch.zeros_like(a).flatten(2).scatter_(2, where.flatten(2), p.flatten(2)).view_as(a).sum(1)

    plain = ExcitationBackprop(vgg16, "features.42").attribute(x, classes)[:, 0]
    torch.testing.assert_close(plain, routed(w.clamp(min=0)), rtol=1e-4, atol=1e-7)
    contrastive = ExcitationBackprop(vgg16).attribute(x, classes, contrastive=True)[:, 0]
    torch.testing.assert_close(contrastive, routed(w.clamp(min=0)) - routed((-w).clamp(min=0)), rtol=1e-4, atol=1e-7)
    heatmap = ExcitationBackprop(vgg16).heatmap(x, classes, contrastive=True)
    assert heatmap.shape == (2, 64, 64) and float(heatmap.min()) >= 0.0


# -- RAP ------------------------------------------------------------------------------------------------

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


# -- pruned and narrow models --------------------------------------------------------------------------

def test_rules_use_the_effective_weight_of_pruned_layers():
    torch.manual_seed(8)
    model = calibrate_batchnorm(models.create("vgg_small", num_classes=6, input_size=32), 32)
    baked = copy.deepcopy(model)
    for module, twin in zip(model.modules(), baked.modules()):
        if isinstance(module, nn.Conv2d):
            prune.l1_unstructured(module, "weight", amount=0.6)
            twin.weight.data = module.weight_orig.detach() * module.weight_mask
    x = torch.randn(2, 3, 32, 32)
    pairs = torch.tensor([[0, 1], [1, 5]])
    for method in (LRP, RAP, ExcitationBackprop):
        torch.testing.assert_close(method(model).attribute(x, pairs), method(baked).attribute(x, pairs))
    # Zeroing the mask of a whole filter changes the maps: the mask is really used.
    conv = model.features[0]
    conv.weight_mask[0] = 0
    assert not torch.allclose(LRP(model).attribute(x, pairs), LRP(baked).attribute(x, pairs))


def test_narrow_vgg_by_layer_name():
    model = calibrate_batchnorm(models.create("vgg16_bn", num_classes=4, width_divisor=8, input_size=64))
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(9))
    relevance = LRP(model).attribute(x, torch.tensor([3]))
    torch.testing.assert_close(relevance.sum(), model(x)[0, 3].detach(), rtol=1e-3, atol=1e-5)
    probability = ExcitationBackprop(model, "features.42").attribute(x, torch.tensor([3]))
    assert probability.shape == (1, 1, 4, 4)
    torch.testing.assert_close(probability.sum(), torch.tensor(1.0), rtol=1e-4, atol=1e-4)
