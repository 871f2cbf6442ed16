"""The traced graph of the rule methods: default layers by the probe on stock torchvision CNNs, the rules of
the edge architectures (ReLU6, Hardswish, SiLU, squeeze-and-excitation gates, stochastic depth) against zennit
and conservation, the effective weight of pruned layers, and layers of narrow models by name."""

import copy

import pytest
import torch
import torch.nn.functional as F
import torchvision
from helpers import calibrate_batchnorm, relative_error
from torch import nn
from torch.nn.utils import prune
from torchvision.models.mobilenetv2 import InvertedResidual
from torchvision.ops import SqueezeExcitation
from zennit.attribution import Gradient
from zennit.canonizers import AttributeCanonizer, SequentialMergeBatchNorm
from zennit.composites import ExcitationBackprop as ZennitExcitationBackprop
from zennit.composites import SpecialFirstLayerMapComposite
from zennit.layer import Sum
from zennit.rules import Norm, Pass, ZBox, ZPlus
from zennit.types import Activation, AvgPool, BatchNorm, Convolution, Linear

from apkit import models
from apkit.attribution import ATTRIBUTION_METHODS, LRP, RAP, ExcitationBackprop, explain
from apkit.attribution._graph import Plan
from apkit.core.errors import ValidationError
from apkit.core.modules import get_layer
from apkit.models import default_layer, spatial_layers

STABILIZER = 1e-12  # zennit adds it to denominators; apkit divides exactly (0 where 0)
SIZE = 64

pytestmark = pytest.mark.usefixtures("one_thread")


def bias_free(model, size=SIZE, seed=1):
    """Zero every bias and every BatchNorm shift; each BatchNorm then scales by the root mean square of its
    input on random images (one at a time, in order), which keeps the activations of order one."""
    generator = torch.Generator().manual_seed(seed)
    dtype = next(model.parameters()).dtype
    with torch.no_grad():
        for module in model.modules():
            if getattr(module, "bias", None) is not None:
                module.bias.zero_()
    model.eval()
    seen = {}

    def keep_input(_module, inputs):
        seen["x"] = inputs[0]

    for module in [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]:
        handle = module.register_forward_pre_hook(keep_input)
        try:
            with torch.no_grad():
                model(torch.randn(4, 3, size, size, generator=generator, dtype=dtype))
        finally:
            handle.remove()
        module.running_mean.zero_()
        module.running_var.copy_(seen["x"].pow(2).mean((0, 2, 3)))
    return model


def images(n=2, seed=2, dtype=torch.float32):
    return torch.randn(n, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(seed), dtype=dtype)


# -- default layers by the probe, all four methods on stock torchvision models ------------------------------

STOCK = {  # architecture -> the layer the probe must choose
    "vgg11_bn": "features.27",  # the last ReLU: pool5 and the adaptive average pool only resample it
    "resnet18": "layer4",
    "mobilenet_v2": "features.18",  # the last block, not the whole backbone "features"
    "mobilenet_v3_small": "features.12",
}


@pytest.fixture(scope="module")
def stock():
    torch.manual_seed(0)
    return {name: getattr(torchvision.models, name)(weights=None, num_classes=4).eval() for name in STOCK}


@pytest.mark.parametrize("arch", list(STOCK))
def test_default_layers_and_all_four_methods_on_stock_models(stock, arch):
    model, expected = stock[arch], STOCK[arch]
    x = images()
    pairs = torch.tensor([[0, 1], [0, 3], [1, 0], [1, 2]])  # 2 images x 2 classes
    assert default_layer(model, "attribution", x) == expected
    assert default_layer(model) == expected  # the zero 224x224 image agrees
    assert expected in spatial_layers(model, x)
    for name in ["gradcam", "excitation", "lrp", "rap"]:
        method = ATTRIBUTION_METHODS.get(name)(model)
        maps = method.heatmap(x, pairs)
        assert maps.shape == (4, SIZE, SIZE) and bool(torch.isfinite(maps).all()), name
        assert method.layer == (expected if name in ("gradcam", "excitation") else None), name
    assert not any(m._forward_hooks for m in model.modules())  # the probe's hooks are gone


def test_probe_on_vgg11_bn_and_excitation_at_its_default(stock):
    vgg = stock["vgg11_bn"]
    x = images()
    layers = spatial_layers(vgg, x)
    assert list(layers)[:3] == ["features.0", "features.1", "features.2"]  # in call order
    assert layers["features.27"] == (2, 512, 4, 4) and layers["avgpool"] == (2, 512, 7, 7)
    assert not any(name.startswith("classifier") for name in layers)  # (N, 4096) is no map
    before = [m.training for m in vgg.train().modules()]
    method = ExcitationBackprop(vgg)
    maps = method.heatmap(x, torch.tensor([1, 2]))
    assert method.layer.startswith("features.") and method.layer == "features.27"
    assert maps.shape == (2, SIZE, SIZE) and float(maps.amax()) > 0
    assert [m.training for m in vgg.modules()] == before  # the probe restored the modes
    vgg.eval()
    torch.testing.assert_close(maps, explain(vgg, x, torch.tensor([1, 2]), method="excitation"))


@pytest.mark.parametrize("method", ["gradcam", "excitation"])
def test_a_non_spatial_layer_is_refused_with_a_clear_error(stock, method):
    with pytest.raises(ValidationError, match=r"layer 'classifier.1' outputs \(N, 4096\), not a \(N, K, h, w\) "
                                              r"map; pass a convolutional layer such as 'features.27'"):
        explain(stock["vgg11_bn"], images(1), 0, method=method, layer="classifier.1")


def test_probe_needs_a_spatial_map():
    net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 2))
    with pytest.raises(ValidationError, match="no layer outputs a spatial map"):
        default_layer(net, example_inputs=torch.zeros(1, 3, 4, 4))
    with pytest.raises(ValidationError, match="zero image of shape \\(1, 3, 224, 224\\) failed"):
        default_layer(net)  # the probe's 224x224 zero image does not fit this model


# -- LRP and Excitation Backprop against zennit ----------------------------------------------------------

class InvertedResidualCanonizer(AttributeCanonizer):
    """The residual sum of torchvision's InvertedResidual as a zennit Sum module (the Norm rule, as apkit)."""

    def __init__(self):
        super().__init__(self._attribute_map)

    @classmethod
    def _attribute_map(cls, name, module):
        if isinstance(module, InvertedResidual) and module.use_res_connect:
            return {"forward": cls.forward.__get__(module), "canonizer_sum": Sum()}
        return None

    @staticmethod
    def forward(self, x):
        return self.canonizer_sum(torch.stack([x, self.conv(x)], dim=-1))


@pytest.fixture(scope="module")
def mobilenet_v2_merged():
    """Stock MobileNetV2 in float64, BatchNorm merged into the convolutions by zennit once and left as exact
    identities (eps 0), so that zennit and apkit see bit-identical activations."""
    torch.manual_seed(0)
    model = calibrate_batchnorm(torchvision.models.mobilenet_v2(weights=None, num_classes=10).double())
    SequentialMergeBatchNorm().apply(model)  # the handles are dropped: the merge stays
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.eps = 0.0
    return model


def test_lrp_equals_zennit_on_stock_mobilenet_v2(mobilenet_v2_merged):
    model = mobilenet_v2_merged
    x = images(dtype=torch.float64)
    classes = torch.tensor([1, 7])
    ours = LRP(model).attribute(x, classes)
    # zennit hooks modules only: its copy pools with a module (Norm rule) where the stock forward calls
    # F.adaptive_avg_pool2d, and runs its activations out of place.
    twin = copy.deepcopy(model)
    for module in twin.modules():
        if hasattr(module, "inplace"):
            module.inplace = False
    hooked = nn.Sequential(twin.features, nn.AdaptiveAvgPool2d(1), nn.Flatten(1), twin.classifier)
    low, high = x.amin((1, 2, 3), keepdim=True), x.amax((1, 2, 3), keepdim=True)
    composite = SpecialFirstLayerMapComposite(
        layer_map=[
            (Activation, Pass()), (Sum, Norm(stabilizer=STABILIZER)), (AvgPool, Norm(stabilizer=STABILIZER)),
            (BatchNorm, Pass()), (Linear, ZPlus(stabilizer=STABILIZER, zero_params="bias")),
        ],
        first_map=[(Convolution, ZBox(low, high, stabilizer=STABILIZER, zero_params="bias"))],
        canonizers=[InvertedResidualCanonizer()],
    )
    with Gradient(hooked, composite) as attributor:
        logits, reference = attributor(x.clone(), lambda out: out * F.one_hot(classes, out.shape[1]))
    torch.testing.assert_close(logits, model(x), rtol=0, atol=0)  # the same network, bit for bit
    error = relative_error(ours, reference)
    assert error < 1e-6, error


def test_excitation_backprop_with_relu6_equals_zennit():
    """Where the rules coincide: non-negative inputs, no biases in the rules, ReLU6 by the Pass rule (zennit's
    rule for activations), max-pooling by the gradient, average pooling by Norm."""
    torch.manual_seed(4)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU6(inplace=True), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1), nn.ReLU6(), nn.Conv2d(16, 16, 3, groups=4), nn.ReLU6(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 5),
    ).double().eval()
    with torch.no_grad():
        model[0].weight.mul_(6.0)  # ReLU6 saturates: its gradient rule would differ from Pass
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    assert bool((model[:1](x) > 6).any())
    classes = torch.tensor([0, 3])
    assert default_layer(model, example_inputs=x) == "6"
    store = {}

    def keep_gradient(_module, _inputs, output):
        output.register_hook(lambda grad: store.__setitem__("p", grad))

    twin = copy.deepcopy(model)
    twin[1].inplace = False
    for layer in ["6", "4", "1"]:
        ours = ExcitationBackprop(model, layer).attribute(x, classes)
        handle = get_layer(twin, layer).register_forward_hook(keep_gradient)
        try:
            composite = ZennitExcitationBackprop(stabilizer=STABILIZER, zero_params="bias")
            with Gradient(twin, composite) as attributor:
                attributor(x.clone().requires_grad_(), F.one_hot(classes, 5).double())
        finally:
            handle.remove()
        reference = store["p"].sum(1, keepdim=True)
        assert relative_error(ours, reference) < 1e-9, layer
        torch.testing.assert_close(ours.sum((1, 2, 3)), torch.ones(2, dtype=torch.float64))


# -- conservation: the gate and pass-through rules ---------------------------------------------------------

@pytest.mark.parametrize("arch", ["mobilenet_v3_small", "efficientnet_b0"])
def test_lrp_conserves_relevance_through_gates_and_activations(arch):
    """A bias-free copy with non-negative weights and images: every activation is then non-negative, the
    z+ rule is the exact z-rule, and the sum of the input relevance is the logit, unless the gate branch
    took relevance (the gate rule) or an activation scaled it (Hardswish, SiLU, Hardsigmoid: the
    pass-through rule)."""
    torch.manual_seed(0)
    model = getattr(torchvision.models, arch)(weights=None, num_classes=10).double()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                module.weight.abs_()
    model = bias_free(calibrate_batchnorm(model))
    x = torch.rand(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    pairs = torch.tensor([[0, 1], [0, 7], [1, 3], [1, 5]])
    logits = model(x)[pairs[:, 0], pairs[:, 1]].detach()
    relevance = LRP(model).attribute(x, pairs).sum((1, 2, 3))
    torch.testing.assert_close(relevance, logits, rtol=1e-6, atol=0)


def test_rap_conserves_relevance_on_bias_free_mobilenet_v3_small():
    """Signed activations: RAP's shift conserves relevance at every weighted layer, so the sum at the input
    is the logit exactly when the gates, Hardswish, pooling and residual rules conserve it too."""
    torch.manual_seed(0)
    model = bias_free(calibrate_batchnorm(torchvision.models.mobilenet_v3_small(weights=None, num_classes=10).double()))
    x = images(dtype=torch.float64)
    pairs = torch.tensor([[0, 1], [0, 7], [1, 3], [1, 5]])
    logits = model(x)[pairs[:, 0], pairs[:, 1]].detach()
    relevance = RAP(model).attribute(x, pairs).sum((1, 2, 3))
    torch.testing.assert_close(relevance, logits, rtol=1e-6, atol=1e-9)


class Gated(nn.Module):
    """conv -> activation -> two gates (torchvision's SqueezeExcitation: gate first; a hand-written one:
    gate second, reshaped and expanded) -> conv -> pool -> linear, bias-free."""

    def __init__(self, activation):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.act = activation
        self.se = SqueezeExcitation(8, 4, scale_activation=nn.Hardsigmoid)
        self.fc = nn.Linear(8, 8, bias=False)
        self.conv2 = nn.Conv2d(8, 8, 3, bias=False)
        self.head = nn.Linear(8, 3, bias=False)

    def forward(self, x):
        x = self.se(self.act(self.conv1(x)))
        gate = torch.sigmoid(self.fc(x.mean((2, 3)))).view(x.shape[0], -1, 1, 1)
        x = x * gate.expand_as(x)
        x = F.relu(self.conv2(x)) * 2.0
        return self.head(F.adaptive_avg_pool2d(x, 1).flatten(1))


@pytest.mark.parametrize("activation", [nn.ReLU6(), nn.LeakyReLU(0.1), nn.Hardswish(), nn.SiLU(), nn.GELU()])
def test_gate_rule_names_the_gate_and_conserves(activation):
    model = Gated(activation).double().eval()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                module.weight.abs_()
        model.se.fc1.bias.zero_()
        model.se.fc2.bias.zero_()
    plan = Plan(model)
    gated = {node.name: carrier.name for node, carrier in plan.carriers.items()}
    # torchvision's SE (scale * input): relevance to the activation; the hand-written gate (x * gate expanded):
    # to x, the SE's output; the product with a positive number: to the tensor.
    assert gated == {"mul": "act", "mul_1": "mul", "mul_2": "relu"}
    x = torch.rand(3, 3, 12, 12, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    logits = model(x).detach()
    relevance = LRP(model).attribute(x, torch.tensor([0, 1, 2]))
    torch.testing.assert_close(relevance.sum((1, 2, 3)), logits[[0, 1, 2], [0, 1, 2]], rtol=1e-9, atol=0)


# -- unsupported nodes: one error lists them all, at plan time --------------------------------------------

class Unsupported(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.act = nn.Tanh()
        self.soft = nn.Softplus()
        self.side = nn.Conv2d(4, 4, 1)
        self.head = nn.Linear(4, 2)

    def forward(self, x):
        h = self.soft(self.act(self.conv(x)))
        h = h * self.side(h)  # a product of two tensors, neither a sigmoid gate
        return self.head(torch.sigmoid(h).mean((2, 3)))


def test_one_error_lists_every_unsupported_node():
    with pytest.raises(ValidationError) as info:
        Plan(Unsupported())  # no input yet: refused before anything is computed
    message = str(info.value)
    assert "4 node(s) of Unsupported" in message
    for expected in ["act (Tanh)", "soft (Softplus)", "mul (mul: a product of two tensors, neither",
                     "sigmoid (sigmoid: a sigmoid is supported only as the gate"]:
        assert expected in message, expected
    assert "supported: Conv2d" in message
    with pytest.raises(ValidationError, match="act \\(Tanh\\); soft \\(Softplus\\)"):
        explain(Unsupported(), torch.randn(1, 3, 8, 8), 0, method="rap")
    # Relevance stopping at a layer never crosses the nodes below it: Tanh is not listed.
    with pytest.raises(ValidationError, match="2 node\\(s\\) of Unsupported: mul .*; sigmoid ") as info:
        LRP(Unsupported(), layer="soft").attribute(torch.randn(1, 3, 8, 8), 0)
    assert "Tanh" not in str(info.value)


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


# -- the fast paths of the backward walk -------------------------------------------------------------------

def test_positive_inverse_is_the_safe_inverse_of_non_negative_denominators():
    from apkit.attribution._graph import negligible, positive_inverse, safe_inverse

    tiny = negligible(torch.float32)
    z = torch.tensor([0.0, tiny / 2, tiny, tiny * 2, 1e-6, 3.0, 1e30])
    z = torch.cat([z, torch.rand(1000) * torch.randint(0, 2, (1000,))])  # half of them exactly 0
    assert torch.equal(positive_inverse(z), safe_inverse(z))
    assert positive_inverse(z)[:4].tolist() == [0.0, 0.0, 0.0, pytest.approx(1 / (tiny * 2))]


@pytest.mark.parametrize("method", ["lrp", "rap", "excitation"])
def test_pairs_in_image_order_read_views_and_give_the_gathered_values(method):
    # Pairs (0, a), (1, b), (2, c) take the view path; the same pairs in another order gather rows.
    torch.manual_seed(0)
    model = calibrate_batchnorm(torchvision.models.resnet18(weights=None, num_classes=10))
    x = images(3)
    in_order = torch.tensor([[0, 3], [1, 7], [2, 1]])
    reordered = in_order[[2, 0, 1]]
    fast = explain(model, x, in_order, method=method, layer="layer3" if method == "excitation" else None)
    gathered = explain(model, x, reordered, method=method, layer="layer3" if method == "excitation" else None)
    torch.testing.assert_close(fast, gathered[[1, 2, 0]], rtol=0, atol=0)


def test_relu_inputs_are_known_non_negative_and_the_rules_skip_nothing_else():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(inplace=True), nn.MaxPool2d(2), nn.Conv2d(4, 4, 3),
                        nn.BatchNorm2d(4), nn.Hardswish(), nn.Conv2d(4, 4, 1), nn.ReLU6(), nn.Dropout(),
                        nn.Conv2d(4, 4, 1), nn.Flatten(), nn.Linear(4 * 9 * 9, 5)).eval()
    plan = Plan(net)
    flags = {layer.name: layer.nonnegative for layer in plan.layers.values()}
    # The input, a Hardswish output and a flattened convolution output may be negative; ReLU outputs,
    # pooled or dropped out, may not.
    assert flags == {"0": False, "3": True, "6": False, "9": True, "11": False}
    x = torch.randn(2, 3, 24, 24)
    for method in ("lrp", "rap"):
        ours = ATTRIBUTION_METHODS.get(method)(net).attribute(x, torch.tensor([1, 4]))
        # With every input checked at run time instead, the maps are the same.
        checked = ATTRIBUTION_METHODS.get(method)(net)
        checked._session = _session_with_flags_off(checked)
        torch.testing.assert_close(ours, checked.attribute(x, torch.tensor([1, 4])), rtol=0, atol=0)
    assert net[1].inplace is True  # the in-place ReLU ran out of place on a copy; the model is as it was


def _session_with_flags_off(method):
    import contextlib

    @contextlib.contextmanager
    def session():
        method._plan = Plan(method.model, method.layer)
        for layer in method._plan.layers.values():
            layer.nonnegative = False
        try:
            yield
        finally:
            method._plan = None

    return session


# -- memory layout: the CPU walk runs channels-last ---------------------------------------------------------

def _small_mobilenet():
    torch.manual_seed(0)
    return calibrate_batchnorm(torchvision.models.mobilenet_v2(weights=None, width_mult=0.35, num_classes=10))


def _nchw_walk(monkeypatch):
    import apkit.attribution._graph as graph

    monkeypatch.setattr(graph, "walk_layout", lambda inputs: torch.contiguous_format)


@pytest.mark.parametrize("method", ["lrp", "rap", "excitation"])
def test_channels_last_walk_gives_the_values_of_the_nchw_walk(monkeypatch, method):
    # mkldnn sums a few layers (here 1x1 convolutions on 2x2 maps) in another order in the other layout, a
    # change of 1e-13 that the rules amplify to about 2e-6 of the largest relevance (LRP, RAP): as much as
    # float32 rounding itself moves the maps, so the float64 maps are compared too: the channels-last walk
    # is as close to them as the NCHW walk.
    model = _small_mobilenet()
    x, pairs = images(3), torch.tensor([[0, 3], [1, 7], [2, 1]])
    layer = "features.17" if method == "excitation" else None

    def maps(net, inputs):
        return ATTRIBUTION_METHODS.get(method)(net, layer).attribute(inputs, pairs)

    channels_last = maps(model, x)
    exact = maps(copy.deepcopy(model).double(), x.double())
    with monkeypatch.context() as patch:
        _nchw_walk(patch)
        nchw = maps(model, x)
    assert channels_last.is_contiguous()
    assert relative_error(channels_last, nchw) < 1e-5
    assert relative_error(channels_last, exact) <= 2 * relative_error(nchw, exact) + 1e-7


@pytest.mark.parametrize("groups", [1, 8, 16])
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_transpose_is_the_input_gradient_of_the_convolution_in_either_layout(groups, layout):
    from apkit.attribution._graph import LinearLayer

    conv = nn.Conv2d(16, 32 if groups == 1 else 16, 3, stride=2, padding=1, groups=groups, bias=False)
    layer = LinearLayer("conv", conv, conv.weight.detach(), None, False, False)
    x = torch.randn(3, 16, 15, 15).contiguous(memory_format=layout).requires_grad_()
    y = conv(x)
    s = torch.randn(y.shape).contiguous(memory_format=layout)
    (gradient,) = torch.autograd.grad(y, x, s)
    transpose = layer.transpose(s, conv.weight.detach(), x.shape)
    torch.testing.assert_close(transpose, gradient, rtol=0, atol=0)
    assert transpose.is_contiguous(memory_format=layout)


@pytest.mark.parametrize("module", [nn.Conv2d(16, 8, 3, stride=2, padding=1), nn.Conv2d(16, 16, 3, groups=16),
                                    nn.Conv2d(16, 8, 1), nn.Linear(16, 8)])
def test_transposes_of_several_weights_are_each_weights_transpose(module):
    from apkit.attribution._graph import LinearLayer

    torch.manual_seed(0)
    weight = module.weight.detach()
    layer = LinearLayer("m", module, weight, None, False, False)
    x = torch.randn(3, 16, 9, 9) if isinstance(module, nn.Conv2d) else torch.randn(3, 16)
    s = torch.randn(layer.forward(x, weight).shape)
    weights = (weight.clamp(min=0), weight.clamp(max=0), weight)
    for ours, w in zip(layer.transposes(s, weights, x.shape), weights, strict=True):
        torch.testing.assert_close(ours, layer.transpose(s, w, x.shape), rtol=0, atol=0)


def test_batchnorms_are_folded_exactly_all_at_once():
    # Every folded weight and bias is the written-out fold of its own BatchNorm, bit for bit.
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4, eps=1e-3), nn.ReLU(), nn.Conv2d(4, 6, 1, bias=False),
                        nn.BatchNorm2d(6, affine=False), nn.Flatten(), nn.Linear(6 * 14 * 14, 3),
                        nn.BatchNorm1d(3)).eval()
    for bn in (net[1], net[4], net[7]):
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
    layers = {layer.name: layer for layer in Plan(net).layers.values()}
    for conv, bn in ((net[0], net[1]), (net[3], net[4]), (net[6], net[7])):
        scale = (bn.weight.detach() if bn.affine else 1.0) / torch.sqrt(bn.running_var + bn.eps)
        bias = conv.bias.detach() if conv.bias is not None else torch.zeros(len(scale))
        expected_bias = (bias - bn.running_mean) * scale + (bn.bias.detach() if bn.affine else 0.0)
        expected_weight = conv.weight.detach() * scale.view(-1, *([1] * (conv.weight.dim() - 1)))
        layer = layers[[name for name, module in net.named_modules() if module is conv][0]]
        torch.testing.assert_close(layer.weight, expected_weight, rtol=0, atol=0)
        torch.testing.assert_close(layer.bias, expected_bias, rtol=0, atol=0)


def test_only_the_values_the_walk_reads_are_copied_to_its_layout():
    model = _small_mobilenet()
    plan = Plan(model, "features.17")
    env = plan.forward(images(2))
    maps = {node: value for node, value in env.items() if isinstance(value, torch.Tensor) and value.dim() == 4}
    read = [node for node in maps if node in plan.walk_reads]
    assert read and all(maps[node].is_contiguous(memory_format=torch.channels_last) for node in read)
    # Nothing below the stop layer is read: those values stay as the model computed them.
    position = {node: index for index, node in enumerate(plan.nodes)}
    below = [node for node in maps if position[node] < position[plan.stop]]
    assert below and not any(node in plan.walk_reads for node in below)
    assert all(maps[node].is_contiguous() for node in below)
