"""Int8 models: the fake-quant twin against the int8 kernels, zennit's LRP and a closed-form gradient; checkpoints."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import torchvision
from helpers import calibrate_batchnorm, relative_error
from torch import nn
from torch.ao.quantization import FakeQuantizeBase
from zennit.attribution import Gradient
from zennit.composites import SpecialFirstLayerMapComposite
from zennit.rules import Pass, ZBox, ZPlus
from zennit.types import Activation, Convolution, Linear

import apkit
from apkit import models
from apkit.attribution import GradCAM
from apkit.core.errors import CheckpointError, ValidationError
from apkit.models import load_checkpoint, resolve_model, save_checkpoint
from apkit.models.quantized import (
    TWIN_TOLERANCE,
    QuantizedModel,
    check_twin,
    is_quantized,
    qconfig_mapping,
    quantize_static,
    quantized_twin,
    twin_agreement,
)


@pytest.fixture(scope="module")
def vgg_int8():
    torch.manual_seed(0)
    net = calibrate_batchnorm(models.create("vgg_small", num_classes=4, input_size=32, width_divisor=2), size=32)
    images = torch.randn(16, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    return net, quantize_static(net, [images[:8], images[8:]], bits=8), images


def _trained_batchnorm(net):
    """Running statistics of random images, affine parameters left at 1 and 0.

    With calibrate_batchnorm's random affine parameters a random MobileNetV2 amplifies any perturbation
    about 10^5 times more (float: input noise of 1e-3 moves its logits by 4 % of the largest): the twin's
    one-step rounding ties (each layer alone is exact, see below) grow to the logits' size, and no int8
    copy of that network is faithful to it either.
    """
    net.train()
    with torch.no_grad():
        for seed in range(3):
            net(torch.randn(16, 3, 32, 32, generator=torch.Generator().manual_seed(seed)))
    return net.eval()


class _LayerRecorder(torch.fx.Interpreter):
    """Each int8 conv / linear layer's input and output, from one run of the int8 graph."""

    def __init__(self, module):
        super().__init__(module)
        self.layers = {}

    def run_node(self, node):
        result = super().run_node(node)
        if node.op == "call_module" and callable(getattr(self.module.get_submodule(node.target), "weight", None)):
            self.layers[node.target] = (self.env[node.args[0]].dequantize(), result)
        return result


def test_each_twin_layer_on_the_int8_layers_input_gives_its_output():
    # Random BatchNorm affine parameters give large folded weights and activations: with activations
    # observed onto 0..255, the x86 depthwise kernels overflowed int16 (up to 41 steps wrong on 1 % of
    # their outputs); observed onto 0..127 every layer is exact but for rounding ties.
    torch.manual_seed(0)
    net = calibrate_batchnorm(torchvision.models.mobilenet_v2(weights=None, num_classes=4), size=32)
    images = torch.randn(12, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    int8 = quantize_static(net, [images], bits=8)
    twin = quantized_twin(int8)
    recorder = _LayerRecorder(int8.module)
    with torch.no_grad():
        recorder.run(images)
        depthwise = 0
        for name, (inputs, output) in recorder.layers.items():
            expected = twin.get_submodule(name)(inputs)
            if output.int_repr().min() == output.q_zero_point():  # the int8 layer clamps at the ReLU6 after it
                expected = expected.clamp(0, 6)
            steps = (expected - output.dequantize()).abs() / output.q_scale()
            assert steps.max() <= 1.0 + 1e-3, name
            depthwise += getattr(int8.module.get_submodule(name), "groups", 1) > 1
    assert depthwise >= 17


@pytest.mark.parametrize(("arch", "bits"), [(arch, bits) for arch in ("vgg_small", "resnet18", "mobilenet_v2")
                                           for bits in (8, 4)] + [("vgg_small", 2), ("resnet18", 2)])
def test_twin_reproduces_the_int8_kernels(arch, bits):
    torch.manual_seed(0)
    if arch == "vgg_small":
        net = models.create(arch, num_classes=4, input_size=32, width_divisor=2)
    else:
        net = torchvision.models.get_model(arch, weights=None, num_classes=4)
    net = _trained_batchnorm(net) if arch == "mobilenet_v2" else calibrate_batchnorm(net, size=32)
    images = torch.randn(12, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    int8 = quantize_static(net, [images], bits=bits)
    agreement = twin_agreement(int8, quantized_twin(int8), images)
    # The int8 kernels are the reference: the twin's float ops land on the same grid but for rounding ties.
    assert agreement["top1_agreement"] == 1.0
    assert agreement["max_abs_diff"] <= 0.05 * agreement["max_abs_logit"]  # 3.6 % at most: ResNet-18, 4 bits
    check_twin(agreement)
    # The weights are on a grid of 2**bits levels per output channel.
    conv = next(m for m in int8.modules() if type(m).__name__ in ("Conv2d", "ConvReLU2d") and hasattr(m, "scale"))
    levels = conv.weight().int_repr()
    assert levels.abs().max() == 2 ** (bits - 1) - 1  # the restricted symmetric range, reached by the largest


def test_twin_has_the_int8_weights_scales_and_zero_points(vgg_int8):
    _, int8, _ = vgg_int8
    twin = quantized_twin(int8)
    quantized = {name: m for name, m in int8.module.named_modules() if hasattr(m, "weight") and callable(m.weight)}
    assert quantized
    for name, module in quantized.items():
        block = twin.get_submodule(name)
        assert torch.equal(block[0].weight, module.weight().dequantize())
        assert float(block[-1].scale) == pytest.approx(module.scale) and int(block[-1].zero_point) == module.zero_point
    # The declared layers follow the fusion: the last ReLU became its convolution's block.
    assert (twin.attribution_layer, twin.matching_layer) == ("features.18", "features.21")


def test_twin_gradient_is_the_straight_through_closed_form():
    torch.manual_seed(3)
    net = nn.Sequential(nn.Flatten(), nn.Linear(12, 6), nn.ReLU(), nn.Linear(6, 3))
    x = torch.randn(5, 3, 2, 2, generator=torch.Generator().manual_seed(4))
    twin = quantized_twin(quantize_static(net, [x]))
    inputs = x.clone().requires_grad_()
    twin(inputs)[:, 1].sum().backward()
    # By hand: d logit_1 / d x = W1^T (W2[1] * [z > 0] * [relu(z) in range]) * [x in range], fake quantization
    # passing the gradient where the value is inside its quantization range.
    blocks = [m for m in twin.modules() if isinstance(m, nn.Sequential)]
    first, second = blocks[0], blocks[1]
    input_quant = next(m for name, m in twin.named_modules() if name.startswith("twin_fake_quant"))

    def in_range(values, fq):
        low = (0 - int(fq.zero_point)) * float(fq.scale)
        high = (255 - int(fq.zero_point)) * float(fq.scale)
        return ((values >= low) & (values <= high)).float()

    flat = x.flatten(1)
    quantized_x = input_quant(flat)
    z = first[0](quantized_x)
    hidden = second[0].weight[1] * (z > 0).float() * in_range(z.relu(), first[-1])
    expected = (hidden @ first[0].weight) * in_range(flat, input_quant)
    assert torch.allclose(inputs.grad.flatten(1), expected.detach(), atol=1e-6)


def test_lrp_on_the_twin_equals_zennit(vgg_int8):
    _, int8, images = vgg_int8
    twin = quantized_twin(int8)
    x, classes = images[:3], torch.tensor([0, 2, 3])
    low, high = x.amin((1, 2, 3), keepdim=True), x.amax((1, 2, 3), keepdim=True)
    # The z^B rule on the first convolution, behind the input's fake quantizer; fake quantizers pass relevance
    # (zennit's Pass: the straight-through gradient would drop the relevance of saturated values).
    ours = apkit.attribution.LRP(twin).attribute(x, classes, bounds=(low, high))
    composite = SpecialFirstLayerMapComposite(
        layer_map=[(Activation, Pass()), (FakeQuantizeBase, Pass()), (Linear, ZPlus(stabilizer=1e-12,
                                                                                     zero_params="bias"))],
        first_map=[(Convolution, ZBox(low, high, stabilizer=1e-12))])
    with Gradient(twin, composite) as attributor:
        _, reference = attributor(x.clone(), lambda out: out * F.one_hot(classes, out.shape[1]))
    assert relative_error(ours, reference) < 1e-4


def test_explain_runs_through_the_twin_and_methods_refuse_int8(vgg_int8):
    _, int8, images = vgg_int8
    pairs = torch.tensor([[0, 1], [1, 2]])
    for method in ("gradcam", "lrp"):
        maps = apkit.explain(int8, images[:2], pairs, method=method)
        assert torch.allclose(maps, apkit.explain(quantized_twin(int8), images[:2], pairs, method=method))
    with pytest.raises(ValidationError, match="quantized_twin"):
        GradCAM(int8)


def test_twin_that_disagrees_is_refused(vgg_int8):
    net, int8, images = vgg_int8
    agreement = twin_agreement(int8, net, images)  # the float model is not the int8 model's twin
    agreement["max_abs_diff"] = agreement["max_abs_logit"]
    with pytest.raises(ValidationError, match="does not reproduce its int8 logits"):
        check_twin(agreement)
    assert TWIN_TOLERANCE["top1_agreement"] > 0.5


def test_is_quantized_and_bits_are_checked(vgg_int8):
    net, int8, _ = vgg_int8
    assert is_quantized(int8) and is_quantized(int8.module) and not is_quantized(net)
    assert not is_quantized(quantized_twin(int8))
    with pytest.raises(ValidationError, match="bits must be one of 8, 4"):
        qconfig_mapping(3)
    with pytest.raises(ValidationError, match="not quantized"):
        quantized_twin(torch.fx.symbolic_trace(net))


def test_checkpoint_round_trip_and_size(vgg_int8, tmp_path):
    net, int8, images = vgg_int8
    path = save_checkpoint(int8, tmp_path / "int8.pt")
    loaded = load_checkpoint(path)
    assert isinstance(loaded, QuantizedModel) and loaded.bits == 8
    assert torch.equal(loaded(images), int8(images))
    assert torch.load(path, weights_only=True)["quantization"]["bits"] == 8  # no code runs on loading
    assert resolve_model(str(path), num_classes=4)(images).shape == (16, 4)
    # int8 weights: about 4x fewer bytes than float32, less the per-channel scales, biases and metadata.
    ratio = save_checkpoint(net, tmp_path / "float.pt").stat().st_size / path.stat().st_size
    assert 3.3 < ratio < 4.1


def test_plain_int8_state_dict_is_refused_naming_the_forms(vgg_int8, tmp_path):
    _, int8, _ = vgg_int8
    torch.save(int8.module.state_dict(), tmp_path / "plain.pt")
    for spec in (f"vgg_small={tmp_path / 'plain.pt'}", str(tmp_path / "plain.pt")):
        with pytest.raises(CheckpointError, match="plain state_dict of a quantized.*apkit quantized checkpoint"):
            resolve_model(spec, num_classes=4)


def test_int8_model_stays_on_the_cpu(vgg_int8):
    _, int8, images = vgg_int8
    assert int8.to("meta") is int8
    assert int8(images).device.type == "cpu"


def test_torchvision_int8_checkpoint_rebuilds_from_its_spec(tmp_path):
    torch.save(torchvision.models.squeezenet1_1(weights=None, num_classes=3).state_dict(), tmp_path / "float.pt")
    teacher = resolve_model(f"torchvision:squeezenet1_1={tmp_path / 'float.pt'}", num_classes=3)
    images = torch.randn(6, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    int8 = quantize_static(teacher, [images])
    check_twin(twin_agreement(int8, quantized_twin(int8), images))  # torch.cat of quantized tensors included
    loaded = load_checkpoint(save_checkpoint(int8, tmp_path / "int8.pt"))
    assert loaded.arch["name"] == "torchvision:squeezenet1_1" and torch.equal(loaded(images), int8(images))
