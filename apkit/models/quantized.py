"""Quantized (int8) models: their quantization config, their fake-quant twin, and their checkpoints.

apkit quantizes with PyTorch's FX graph mode (``torch.ao.quantization.quantize_fx``, see
``docs/quantization.md``): weights per output channel to ``bits`` (8 or 4, symmetric, stored as
``qint8``), activations per tensor to 8 bits (``quint8``, affine).  A converted model runs int8
kernels on the CPU; :class:`QuantizedModel` holds one, keeps it on the CPU whatever ``.to()`` asks,
and records the float architecture it was made from, so that it can be saved and rebuilt.

Int8 kernels have no gradients, so gradient and rule methods (Grad-CAM, LRP, ...) run on the
model's **fake-quant twin** (:func:`quantized_twin`): the same graph with float convolutions and
linear layers whose weights are the int8 weights dequantized, and, wherever the int8 model
quantizes an activation, a :class:`torch.ao.quantization.FixedQParamsFakeQuantize` with that
activation's own scale and zero point.  Fake quantization passes gradients straight through
inside the quantization range, so the twin computes what the int8 model computes (up to the
rounding of a few ops, such as average pooling, that the int8 kernels requantize) and can be
differentiated.  :func:`twin_agreement` measures how closely, and :func:`check_twin` refuses a
twin that does not agree within :data:`TWIN_TOLERANCE`.

Examples
--------
>>> import torch
>>> from apkit import models
>>> from apkit.models.quantized import quantize_static, quantized_twin, twin_agreement
>>> net = models.create("vgg_small", num_classes=4)
>>> images = torch.randn(8, 3, 64, 64)
>>> int8 = quantize_static(net, [images], bits=8)
>>> twin = quantized_twin(int8)
>>> agreement = twin_agreement(int8, twin, images)
>>> agreement["top1_agreement"], agreement["max_abs_diff"] < 0.01 * agreement["max_abs_logit"]
(1.0, True)
>>> check_twin(agreement) is agreement
True
"""

from __future__ import annotations

import contextlib
import copy
import io
import operator
import os
import statistics
import time
import warnings
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import torch
import torch.fx as fx
from torch import nn

from apkit.core.errors import CheckpointError, ValidationError
from apkit.core.names import WEIGHT_BITS
from apkit.core.validation import check_int, check_module, check_tensor
from apkit.models.layers import default_layer
from apkit.models.zoo import MODELS, create

__all__ = [
    "ACTIVATION_BITS", "ACTIVATION_OBSERVED_MAX", "BACKEND", "LATENCY_BATCH", "TWIN_TOLERANCE", "WEIGHT_BITS",
    "QuantizedModel", "architecture_of",
    "audit_quantized", "batch_latency", "check_bits", "check_twin", "checked_twin", "convert", "is_quantized",
    "load_quantized", "map_layers", "model_bytes", "prepare", "qconfig_mapping", "quantize_static", "quantized_twin",
    "quantized_payload", "refuse_quantized_state", "size_and_speed", "twin_agreement",
]

#: The quantized engine: x86 (fbgemm / oneDNN kernels) runs on any x86-64 CPU.
BACKEND = "x86"
#: Activations are stored as ``quint8``; the observers map the calibrated range onto 0..127 (PyTorch's
#: ``reduce_range`` of its own x86 qconfig): the x86 kernels add pairs of u8 x s8 products in int16, and
#: 255 x 127 x 2 overflows it, which made int8 depthwise convolutions wrong by up to 41 steps on 1 % of
#: their outputs (docs/quantization.md).  Values above the calibrated range still reach 255.
ACTIVATION_BITS = 8
ACTIVATION_OBSERVED_MAX = 127
#: How closely the twin must reproduce the int8 model on the audited images: no logit further from
#: the int8 one than ``relative_diff`` times the largest absolute int8 logit, and the same top-1
#: class on at least ``top1_agreement`` of the images.  The twin computes in float what the int8
#: kernels compute in integers; the two differ where a value falls on a rounding tie or an op
#: requantizes (average pooling): by a few quantization steps, 0.002-2.4 % of the largest logit for
#: apkit's VGG and torchvision's ResNet-18 and MobileNets at 8 and 4 bits.
TWIN_TOLERANCE = {"relative_diff": 0.1, "top1_agreement": 0.95}
#: The key of a checkpoint's quantization record (see :func:`quantized_payload`).
QUANTIZATION_KEY = "quantization"
TORCHVISION = "torchvision:"
_QUANTIZED_DTYPES = (torch.qint8, torch.quint8, torch.qint32)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """torch.ao.quantization and its int8 tensors warn that they are deprecated; apkit's docs say why they are used."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*torch.ao.quantization is deprecated.*")
        warnings.filterwarnings("ignore", message=".*quantized tensor creation functions.*deprecated.*")
        warnings.filterwarnings("ignore", category=UserWarning, module="torch.ao.quantization.*")
        yield


def check_bits(bits: object) -> int:
    """The weight bit-width, one of :data:`WEIGHT_BITS`."""
    check_int(bits, "bits")
    if bits not in WEIGHT_BITS:
        raise ValidationError(f"bits must be one of {', '.join(map(str, WEIGHT_BITS))} (the weights' bit-width), "
                              f"got {bits}")
    return bits


def qconfig_mapping(bits: int = 8, *, qat: bool = False):
    """The ``QConfigMapping`` of a ``bits``-bit weight, 8-bit activation quantization.

    Weights: per output channel, symmetric, ``qint8`` storage with ``quant_min, quant_max`` of
    ``bits`` bits in the restricted range (-127..127 for 8, -7..7 for 4, -1..1 for 2).  Activations:
    per tensor, affine, ``quint8``, observed onto 0..127 (:data:`ACTIVATION_OBSERVED_MAX`).
    ``qat=True`` gives fake-quantize modules (moving-average observers) for training, otherwise
    observers for calibration (a histogram observer for activations).

    Examples
    --------
    >>> m = qconfig_mapping(4)
    >>> w = m.global_qconfig.weight()
    >>> w.quant_min, w.quant_max, w.qscheme
    (-7, 7, torch.per_channel_symmetric)
    """
    from torch.ao.quantization import (
        FakeQuantize,
        HistogramObserver,
        MovingAverageMinMaxObserver,
        MovingAveragePerChannelMinMaxObserver,
        PerChannelMinMaxObserver,
        QConfig,
        QConfigMapping,
    )

    bits = check_bits(bits)
    # The symmetric range without its lowest level (-7..7 at 4 bits): the observer's scale, max|w| / 7,
    # then maps every weight into it, whereas -8..7 gives max|w| / 7.5, which rounds the largest weight
    # to 8, a level the conversion (which clamps to qint8, not to 4 bits) would keep.
    weight_range = {"quant_min": 1 - 2 ** (bits - 1), "quant_max": 2 ** (bits - 1) - 1, "dtype": torch.qint8,
                    "qscheme": torch.per_channel_symmetric, "ch_axis": 0}
    activation_range = {"quant_min": 0, "quant_max": ACTIVATION_OBSERVED_MAX, "dtype": torch.quint8}
    if qat:
        activation = FakeQuantize.with_args(observer=MovingAverageMinMaxObserver, **activation_range)
        weight = FakeQuantize.with_args(observer=MovingAveragePerChannelMinMaxObserver, **weight_range)
    else:
        activation = HistogramObserver.with_args(**activation_range)
        weight = PerChannelMinMaxObserver.with_args(**weight_range)
    with _quiet():
        return QConfigMapping().set_global(QConfig(activation=activation, weight=weight))


def prepare(model: nn.Module, example_inputs: torch.Tensor, *, bits: int = 8, qat: bool = False) -> fx.GraphModule:
    """A copy of ``model`` prepared for calibration (observers) or, with ``qat``, for quantization-aware training.

    The copy is traced with ``torch.fx`` (the model must be FX-traceable: torchvision's CNNs and
    apkit's are), convolutions, BatchNorms and ReLUs are fused, and observers or fake-quantize
    modules are inserted.  It carries the model's ``attribution_layer`` and ``matching_layer`` (its
    default layers where it names none), named as the fused graph calls them.
    """
    from torch.ao.quantization.quantize_fx import prepare_fx, prepare_qat_fx

    check_module(model)
    check_tensor(example_inputs, "example_inputs", floating=True)
    check_bits(bits)
    copied = copy.deepcopy(model).cpu()
    copied.train(qat)
    try:
        with _quiet():
            builder = prepare_qat_fx if qat else prepare_fx
            prepared = builder(copied, qconfig_mapping(bits, qat=qat), example_inputs=(example_inputs.cpu(),),
                               backend_config=_backend_config())
    except Exception as exc:  # torch.fx raises many types for untraceable code
        raise ValidationError(f"{type(model).__name__} cannot be quantized: torch.fx could not trace it ({exc}); "
                              "quantize an FX-traceable model (apkit's and torchvision's CNNs are)") from exc
    for kind, name in map_layers(model, prepared, example_inputs.cpu()).items():
        setattr(prepared, kind, name)
    return prepared


def _backend_config():
    from torch.ao.quantization.backend_config import get_native_backend_config

    return get_native_backend_config()


def map_layers(model: nn.Module, graph_module: fx.GraphModule, example_inputs: torch.Tensor) -> dict[str, str]:
    """``model``'s attribution and matching layers (:func:`default_layer`), named as ``graph_module`` calls them.

    Fusion keeps the first module of a fused group (a convolution) and drops the others, so a
    ReLU after a convolution and a BatchNorm maps to that convolution's name, whose fused output
    is the ReLU's.  A block that tracing flattened (torchvision's ``layer3``) maps to the module
    its output goes through once: the observer or fake quantizer of its last operation.  A layer
    with neither is left out: the attribution methods then choose one.
    """
    called = {n.target for n in graph_module.graph.nodes if n.op == "call_module"}
    found = {}
    for kind in ("attribution", "matching"):
        try:
            name = default_layer(model, kind, example_inputs)
        except ValidationError:  # no spatial map at this input size: the methods will say so if asked
            continue
        mapped = name if name in called else _fused_into(model, name, called) or _block_output(graph_module, name)
        if mapped is not None:
            found[f"{kind}_layer"] = mapped
    return found


def _block_output(graph_module: fx.GraphModule, name: str) -> str | None:
    """The observer (or fake quantizer) module that the output of the flattened block ``name`` goes through."""
    inside = [n for n in graph_module.graph.nodes if name in (n.meta.get("nn_module_stack") or {})]
    users = list(inside[-1].users) if inside else []
    if len(users) == 1 and users[0].op == "call_module" and users[0].target.startswith("activation_post_process"):
        return users[0].target
    return None


def _fused_into(model: nn.Module, name: str, called: set) -> str | None:
    """The module of ``called`` that a chain of single-input modules ending at ``name`` was fused into."""
    try:
        graph = fx.symbolic_trace(model).graph
    except Exception:  # noqa: BLE001 - an untraceable model: no mapping, the methods choose a layer
        return None
    node = next((n for n in graph.nodes if n.op == "call_module" and n.target == name), None)
    for _ in range(4):  # a fused group is at most conv, bn, relu (plus an add)
        if node is None or node.op != "call_module" or not node.args or not isinstance(node.args[0], fx.Node):
            return None
        node = node.args[0]
        if node.op == "call_module" and node.target in called:
            return node.target
    return None


class QuantizedModel(nn.Module):
    """An int8 model (a converted FX graph) that stays on the CPU and remembers its float architecture.

    Parameters
    ----------
    module : torch.fx.GraphModule
        The output of ``convert_fx``.
    bits : int
        The weights' bit-width.
    arch : dict
        The float architecture: ``{"name", "num_classes", "options"}`` (an apkit model name or
        ``torchvision:NAME``), or empty where it is unknown (the model cannot be saved then).
    input_shape : tuple of int
        The ``(1, C, H, W)`` input the graph was traced with (needed to rebuild it).
    layers : dict
        ``attribution_layer`` / ``matching_layer`` as the twin names them.

    The int8 kernels run on the CPU only: ``forward`` moves its input there and the logits back,
    and ``.to(device)`` leaves the model where it is.
    """

    def __init__(self, module: fx.GraphModule, *, bits: int, arch: Mapping[str, Any] | None = None,
                 input_shape: tuple[int, ...] = (), layers: Mapping[str, str] | None = None):
        super().__init__()
        self.module = module
        self.bits = check_bits(bits)
        self.arch = dict(arch or {})
        self.input_shape = tuple(int(s) for s in input_shape)
        self.layers = dict(layers or {})
        if self.arch:
            self.apkit_config = dict(self.arch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with _quiet():
            return self.module(x.cpu()).to(x.device)

    def _apply(self, fn, recurse=True):  # int8 kernels live on the CPU: .to()/.cuda()/.half() change nothing
        return self

    def extra_repr(self) -> str:
        name = self.arch.get("name", "unknown architecture")
        return f"{name}, {self.bits}-bit weights, {ACTIVATION_BITS}-bit activations"


def convert(prepared: fx.GraphModule, *, bits: int, arch: Mapping[str, Any] | None = None,
            input_shape: tuple[int, ...] = ()) -> QuantizedModel:
    """The int8 model of a calibrated or trained ``prepared`` model (which is left as it is)."""
    from torch.ao.quantization.quantize_fx import convert_fx

    copied = copy.deepcopy(prepared).cpu().eval()
    with _quiet():
        module = convert_fx(copied, backend_config=_backend_config())
        _clamp_weight_levels(module, bits)  # makes int8 tensors, which torch warns about
    present = dict(module.named_modules())  # conversion removes the observers a flattened block maps to
    layers = {kind: getattr(prepared, kind) for kind in ("attribution_layer", "matching_layer")
              if getattr(prepared, kind, None) in present}
    return QuantizedModel(module, bits=bits, arch=arch, input_shape=input_shape, layers=layers)


def _clamp_weight_levels(module: nn.Module, bits: int) -> None:
    """Clamp every int8 weight to the ``bits``-bit range, as the fake quantizer did in training.

    ``convert_fx`` clamps to ``qint8``'s -128..127, not to the observer's range: after QAT a
    moving-average observer lags the last weights, and a weight the fake quantizer held at level 7
    (4 bits) would become an 8 in the int8 model.
    """
    bound = 2 ** (bits - 1) - 1
    for layer in module.modules():
        if not (_is_quantized_module(layer) and callable(getattr(layer, "weight", None))
                and hasattr(layer, "set_weight_bias")):
            continue
        weight = layer.weight()
        levels = weight.int_repr()
        if int(levels.abs().max()) <= bound:
            continue
        clamped = torch._make_per_channel_quantized_tensor(
            levels.clamp(-bound, bound), weight.q_per_channel_scales(), weight.q_per_channel_zero_points(),
            weight.q_per_channel_axis())
        layer.set_weight_bias(clamped, layer.bias())


def architecture_of(model: nn.Module) -> dict[str, Any]:
    """The float architecture a quantized checkpoint records: an apkit model's config, or a torchvision name.

    ``apkit.models.resolve_model`` marks the models it builds from ``torchvision:NAME=PATH`` with
    ``apkit_arch``; any other model gives an empty dict (it can be quantized but not saved).
    """
    config = getattr(model, "apkit_config", None)
    if isinstance(config, Mapping) and "name" in config:
        options = dict(config.get("options", {}))
        return {"name": config["name"], "num_classes": config["num_classes"], "options": options}
    arch = getattr(model, "apkit_arch", None)
    if isinstance(arch, str) and arch.startswith(TORCHVISION):
        return {"name": arch, "num_classes": int(getattr(model, "apkit_num_classes", 0)) or None, "options": {}}
    return {}


def quantize_static(model: nn.Module, batches: Iterable[torch.Tensor], *, bits: int = 8) -> QuantizedModel:
    """Post-training static quantization: observe ``batches`` of images, then convert to int8.

    Parameters
    ----------
    model : torch.nn.Module
        A float, FX-traceable model (not modified).
    batches : iterable of Tensor (N, C, H, W)
        Calibration images (a few batches of training images).
    bits : {8, 4}
        Weight bit-width.
    """
    batches = iter(batches)
    first = next(batches, None)
    if first is None:
        raise ValidationError("quantize_static needs at least one batch of calibration images")
    check_tensor(first, "calibration images", ndim=4, floating=True)
    prepared = prepare(model, first[:1], bits=bits)
    with torch.no_grad(), _quiet():
        prepared(first.cpu())
        for images in batches:
            prepared(images.cpu())
    return convert(prepared, bits=bits, arch=architecture_of(model), input_shape=tuple(first[:1].shape))


def _graph_module(model: nn.Module) -> tuple[fx.GraphModule, dict[str, str]]:
    if isinstance(model, QuantizedModel):
        return model.module, model.layers
    if isinstance(model, fx.GraphModule):
        return model, {}
    raise ValidationError(f"{type(model).__name__} is not an int8 model apkit can explain; quantize it with "
                          "apkit (compress(..., method='ptq' or 'qat')) or torch.ao.quantization's FX convert_fx")


def _is_quantized_module(module: nn.Module) -> bool:
    return type(module).__module__.startswith(("torch.ao.nn.quantized", "torch.ao.nn.intrinsic.quantized"))


def is_quantized(model: object) -> bool:
    """Whether ``model`` computes with int8 kernels (apkit's :class:`QuantizedModel` or any converted FX graph).

    Examples
    --------
    >>> is_quantized(nn.Linear(2, 2))
    False
    """
    if isinstance(model, QuantizedModel):
        return True
    if not isinstance(model, nn.Module):
        return False
    if any(_is_quantized_module(m) for m in model.modules()):
        return True
    return isinstance(model, fx.GraphModule) and any(
        n.op == "call_function" and n.target is torch.quantize_per_tensor for n in model.graph.nodes)


def _fake_quant(scale: float, zero_point: int) -> nn.Module:
    """torch's fixed-parameter fake quantizer of a ``quint8`` activation (straight-through gradients).

    It clamps to the dtype's 0..255, as the int8 kernels do, not to the observed 0..127.
    """
    from torch.ao.quantization import FixedQParamsFakeQuantize, FixedQParamsObserver

    observer = FixedQParamsObserver.with_args(scale=float(scale), zero_point=int(zero_point), dtype=torch.quint8,
                                              quant_min=0, quant_max=2**ACTIVATION_BITS - 1)
    fake = FixedQParamsFakeQuantize(observer=observer)
    fake.disable_observer()
    return fake


def _float_layer(module: nn.Module) -> nn.Module:
    """The float conv or linear layer with ``module``'s int8 weights, dequantized."""
    import torch.ao.nn.quantized as nnq

    weight, bias = module.weight().dequantize(), module.bias()
    if isinstance(module, nnq.Linear):
        layer = nn.Linear(module.in_features, module.out_features, bias=bias is not None)
    else:
        layer = nn.Conv2d(module.in_channels, module.out_channels, module.kernel_size, stride=module.stride,
                          padding=module.padding, dilation=module.dilation, groups=module.groups,
                          bias=bias is not None, padding_mode=module.padding_mode)
    layer.weight = nn.Parameter(weight)
    if bias is not None:
        layer.bias = nn.Parameter(bias.detach().clone())
    return layer


def _twin_module(module: nn.Module) -> nn.Module | None:
    """The float twin of one quantized module (``None``: not a quantized module)."""
    import torch.ao.nn.intrinsic.quantized as nniq
    import torch.ao.nn.quantized as nnq

    if isinstance(module, (nnq.Conv2d, nnq.Linear)):
        fused = isinstance(module, (nniq.ConvReLU2d, nniq.LinearReLU))
        parts = [_float_layer(module), *([nn.ReLU()] if fused else [])]
        return nn.Sequential(*parts, _fake_quant(module.scale, module.zero_point))
    if isinstance(module, nnq.Dropout):
        return nn.Dropout(module.p)
    if isinstance(module, nnq.Hardswish):
        return nn.Sequential(nn.Hardswish(), _fake_quant(module.scale, module.zero_point))
    if isinstance(module, nnq.ReLU6):
        return nn.ReLU6()
    if _is_quantized_module(module):
        raise ValidationError(f"apkit cannot build a fake-quant twin of the int8 layer {type(module).__name__}; "
                              "quantize the model with apkit (compress(..., method='ptq' or 'qat'))")
    return None


# The quantized operators of a converted graph and the float operations of the twin.
_OPERATORS = {
    "add": (operator.add, False), "add_relu": (operator.add, True), "mul": (operator.mul, False),
    "mul_relu": (operator.mul, True),
}


def _constant(gm: fx.GraphModule, value: object) -> float:
    """A scale or zero point: a number, or a ``get_attr`` node of a tensor."""
    if isinstance(value, fx.Node) and value.op == "get_attr":
        return float(getattr(gm, value.target))
    return float(value)


class _TwinBuilder:
    """Rewrites a converted graph in place into its fake-quant twin."""

    def __init__(self, gm: fx.GraphModule):
        self.gm = gm
        self.count = 0

    def fake_quant_after(self, node: fx.Node, source: fx.Node, scale: float, zero_point: float) -> fx.Node:
        name = f"twin_fake_quant_{self.count}"
        self.count += 1
        self.gm.add_submodule(name, _fake_quant(scale, int(zero_point)))
        with self.gm.graph.inserting_after(node):
            return self.gm.graph.call_module(name, (source,))

    def rewrite(self, node: fx.Node) -> None:
        if node.op == "call_function" and node.target is torch.quantize_per_tensor:
            x, scale, zero_point = node.args[:3]
            self.replace(node, self.fake_quant_after(node, x, _constant(self.gm, scale),
                                                     _constant(self.gm, zero_point)))
        elif node.op == "call_method" and node.target == "dequantize":
            self.replace(node, node.args[0])
        elif node.op == "call_module":
            twin = _twin_module(self.gm.get_submodule(node.target))
            if twin is not None:
                self.gm.delete_submodule(node.target)
                self.gm.add_submodule(node.target, twin)
        elif node.op == "call_function" and getattr(node.target, "__module__", None) == "torch._ops.quantized":
            self.rewrite_operator(node)

    def rewrite_operator(self, node: fx.Node) -> None:
        name = str(node.target).split(".")[1]
        if name not in _OPERATORS:
            raise ValidationError(f"apkit cannot build a fake-quant twin of the int8 operator {node.target}; "
                                  "quantize the model with apkit (compress(..., method='ptq' or 'qat'))")
        function, relu = _OPERATORS[name]
        a, b, scale, zero_point = node.args[:4]
        graph = self.gm.graph
        with graph.inserting_after(node):
            result = graph.call_function(function, (a, b))
        last = result
        if relu:
            with graph.inserting_after(result):
                last = graph.call_function(torch.relu, (result,))
        self.replace(node, self.fake_quant_after(last, last, _constant(self.gm, scale),
                                                 _constant(self.gm, zero_point)))

    def replace(self, node: fx.Node, new: object) -> None:
        node.replace_all_uses_with(new)
        self.gm.graph.erase_node(node)


def quantized_twin(model: nn.Module) -> fx.GraphModule:
    """The fake-quant twin of an int8 model: float ops, the int8 model's scales and zero points, gradients.

    Parameters
    ----------
    model : QuantizedModel or torch.fx.GraphModule
        An int8 model: apkit's, or the output of ``torch.ao.quantization.quantize_fx.convert_fx``.

    Returns
    -------
    torch.fx.GraphModule
        In eval mode, on the CPU, with the ``attribution_layer`` / ``matching_layer`` that the int8
        model recorded.  Each quantized convolution or linear layer ``L`` becomes the block
        ``nn.Sequential(Conv2d/Linear[, ReLU], FixedQParamsFakeQuantize)`` under the same name (so
        a hook on ``L`` sees the requantized output), each input quantization a fake quantization,
        each quantized addition or product the float operation followed by one.

    Raises
    ------
    ValidationError
        ``model`` is not int8, or holds an int8 layer or operator the twin does not cover.
    """
    module, layers = _graph_module(model)
    if not is_quantized(module):
        raise ValidationError(f"{type(model).__name__} is not quantized (no int8 layer); explain it directly")
    gm = copy.deepcopy(module)
    builder = _TwinBuilder(gm)
    for node in list(gm.graph.nodes):
        builder.rewrite(node)
    gm.graph.eliminate_dead_code()
    gm.recompile()
    gm.delete_all_unused_submodules()
    for kind, name in layers.items():
        setattr(gm, kind, name)
    return gm.eval()


def _logits(model: nn.Module, images: torch.Tensor, batch_size: int) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([model(images[i:i + batch_size].cpu()).float().cpu()
                          for i in range(0, len(images), batch_size)])


def twin_agreement(model: nn.Module, twin: nn.Module, images: torch.Tensor | Any, *, batch_size: int = 64) -> dict:
    """How closely ``twin`` reproduces the int8 ``model`` on ``images`` (a batch, or a dataset of ``(image, ...)``).

    Returns
    -------
    dict
        ``max_abs_diff`` (the largest absolute difference of any logit), ``max_abs_logit`` (the
        largest absolute int8 logit, its scale), ``top1_agreement`` (the share of images whose
        top-1 class is the same) and ``images`` (their number).
    """
    if not isinstance(images, torch.Tensor):
        images = _dataset_images(images)
    check_tensor(images, "images", ndim=4, floating=True)
    check_int(batch_size, "batch_size", minimum=1)
    was = twin.training
    twin.eval()
    try:
        int8, fake = _logits(model, images, batch_size), _logits(twin, images, batch_size)
    finally:
        twin.train(was)
    if not len(images):
        raise ValidationError("twin_agreement needs at least one image")
    return {"max_abs_diff": float((int8 - fake).abs().max()), "max_abs_logit": float(int8.abs().max()),
            "top1_agreement": float((int8.argmax(1) == fake.argmax(1)).float().mean()), "images": len(images)}


def check_twin(agreement: Mapping[str, float], *, name: str = "the model",
               tolerance: Mapping[str, float] | None = None) -> Mapping[str, float]:
    """Refuse a twin whose :func:`twin_agreement` is outside ``tolerance`` (default :data:`TWIN_TOLERANCE`)."""
    limits = {**TWIN_TOLERANCE, **(tolerance or {})}
    allowed = limits["relative_diff"] * agreement["max_abs_logit"]
    if agreement["max_abs_diff"] > allowed or agreement["top1_agreement"] < limits["top1_agreement"]:
        raise ValidationError(
            f"the fake-quant twin of {name} does not reproduce its int8 logits (max |difference| "
            f"{agreement['max_abs_diff']:.4g}, allowed {allowed:.4g}; top-1 agreement "
            f"{agreement['top1_agreement']:.4f}, needed {limits['top1_agreement']}), so its attribution maps would "
            "not be the int8 model's; quantize the model with apkit (its int8 kernels and twin agree), or audit "
            "its float model")
    return agreement


def _dataset_images(dataset: Any, count: int | None = None) -> torch.Tensor:
    """The first ``count`` (default: all) images of a dataset of ``(image, ...)`` items, as one batch."""
    try:
        stop = len(dataset) if count is None else min(count, len(dataset))
        return torch.stack([dataset[i][0] for i in range(stop)]).float()
    except (TypeError, IndexError, RuntimeError) as exc:
        raise ValidationError(f"images must be a batch (N, C, H, W) or a dataset of (image, ...) items of one size "
                              f"({type(exc).__name__}: {exc})") from exc


# ------------------------------------------------------------------------------------------ size and speed

#: Images in the batch whose CPU latency is measured against the float teacher's.
LATENCY_BATCH = 32


def model_bytes(model: nn.Module) -> int:
    """Bytes of ``model``'s state dict as ``torch.save`` writes it (int8 weights take one byte each)."""
    module = model.module if isinstance(model, QuantizedModel) else model
    buffer = io.BytesIO()
    torch.save(module.state_dict(), buffer)
    return buffer.tell()


def batch_latency(model: nn.Module, images: torch.Tensor, *, repeats: int = 5) -> float:
    """The median CPU time (seconds) of one forward pass of ``model`` over the batch ``images``."""
    check_int(repeats, "repeats", minimum=1)
    times = []
    model_on_cpu = copy.deepcopy(model).cpu().eval()
    with torch.no_grad():
        model_on_cpu(images.cpu())  # warm-up: packing, allocation
        for _ in range(repeats):
            began = time.perf_counter()
            model_on_cpu(images.cpu())
            times.append(time.perf_counter() - began)
    return statistics.median(times)


def size_and_speed(model: QuantizedModel, teacher: nn.Module, images: torch.Tensor) -> dict[str, Any]:
    """``model``'s saved size and the CPU latency of the batch ``images``, each against the float ``teacher``.

    Sizes are those of the state dicts as ``torch.save`` writes them; latencies the best of two
    interleaved medians (so that a load that varies over time weighs on both alike).
    """
    size, teacher_size = model_bytes(model), model_bytes(teacher)
    pairs = [(batch_latency(teacher, images), batch_latency(model, images)) for _ in range(2)]
    teacher_s, int8_s = min(t for t, _ in pairs), min(q for _, q in pairs)
    return {"size": {"bytes": size, "teacher_bytes": teacher_size, "ratio": teacher_size / size},
            "latency": {"batch": len(images), "device": "cpu", "seconds": int8_s, "teacher_seconds": teacher_s,
                        "speedup": teacher_s / int8_s}}


def checked_twin(model: nn.Module, dataset: Any, *, name: str = "the model", device: str | torch.device = "cpu",
                 batch_size: int = 64) -> tuple[nn.Module, dict[str, Any]]:
    """The fake-quant twin of an int8 ``model`` on ``device``, and its :func:`twin_agreement` on every image of
    ``dataset``; a twin outside :data:`TWIN_TOLERANCE` is refused (:func:`check_twin`)."""
    twin = quantized_twin(model)
    agreement = check_twin(twin_agreement(model, twin, dataset, batch_size=batch_size), name=name)
    return twin.to(device), dict(agreement)


def audit_quantized(model: nn.Module, teacher: nn.Module, dataset: Any, *, name: str = "the model",
                    device: str | torch.device = "cpu", batch_size: int = 64) -> tuple[nn.Module, dict[str, Any]]:
    """What an audit needs of an int8 student: its fake-quant twin, checked on the audited images, and its record.

    Returns
    -------
    twin : torch.fx.GraphModule
        On ``device``; the audit scores its attribution maps.
    record : dict
        ``bits``, ``measured_on`` (which model each number of the report was measured on),
        ``twin`` (:func:`twin_agreement` on every image of ``dataset``), and ``size`` and
        ``latency`` against the float teacher (:func:`size_and_speed`).

    Raises
    ------
    ValidationError
        The twin does not reproduce the int8 logits within :data:`TWIN_TOLERANCE`.
    """
    twin, agreement = checked_twin(model, dataset, name=name, device=device, batch_size=batch_size)
    images = _dataset_images(dataset, LATENCY_BATCH)
    bits = model.bits if isinstance(model, QuantizedModel) else None
    measured_on = {"predictive": "int8 model", "attribution": "fake-quant twin",
                   "similarity": "fake-quant twin against the float teacher", "size": "int8 state dict",
                   "latency": "int8 model on the CPU"}
    return twin, {"bits": bits, "measured_on": measured_on, "twin": agreement,
                  **size_and_speed(model, teacher, images)}


# ------------------------------------------------------------------------------------------ checkpoints


def quantized_payload(model: QuantizedModel, *, meta: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """What the checkpoint of an int8 model holds (:func:`apkit.models.save_checkpoint` writes it).

    The int8 state dict (``qint8`` weights, scales, zero points), the float architecture and the
    quantization (``bits``, ``backend``, ``input_shape``), all plain data that
    ``torch.load(weights_only=True)`` reads; :func:`apkit.models.load_checkpoint` rebuilds the
    model: architecture, ``prepare_fx``, ``convert_fx``, then the saved state.
    """
    if not isinstance(model, QuantizedModel):
        raise CheckpointError(f"expected apkit's QuantizedModel, got {type(model).__name__}")
    if not model.arch or not model.input_shape:
        raise CheckpointError("this int8 model does not record its float architecture, so it could not be rebuilt; "
                              "quantize a model built by apkit.models.create or resolve_model('torchvision:NAME=PATH')")
    state = model.module.state_dict()
    # A quantized Linear keeps (weight, bias) and its dtype in its state: plain data, stored beside the tensors.
    tensors = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
    return {
        "config": model.arch, "meta": dict(meta or {}),
        "state_dict": tensors,
        QUANTIZATION_KEY: {"bits": model.bits, "backend": BACKEND, "input_shape": list(model.input_shape),
                           "layers": dict(model.layers), "packed": {k: v for k, v in state.items() if k not in tensors},
                           # The layers' state versions, which tell torch how to read the packed entries.
                           "versions": {k: dict(v) for k, v in getattr(state, "_metadata", {}).items()}},
    }


def _float_architecture(config: Mapping[str, Any], path) -> nn.Module:
    name, classes = config["name"], config["num_classes"]
    if isinstance(name, str) and name.startswith(TORCHVISION):
        import torchvision

        return torchvision.models.get_model(name[len(TORCHVISION):], weights=None, num_classes=classes)
    if name not in MODELS:
        raise CheckpointError(f"quantized checkpoint {str(path)!r} names an unknown architecture {name!r}; "
                              "re-create it with this apkit")
    return create(name, num_classes=classes, **config.get("options", {}))


def load_quantized(payload: Mapping[str, Any], path: str | os.PathLike) -> QuantizedModel:
    """Rebuild the int8 model of a checkpoint holding a :func:`quantized_payload` (its checked payload)."""
    record = payload[QUANTIZATION_KEY]
    if not isinstance(record, Mapping) or record.get("backend") != BACKEND or \
            record.get("bits") not in WEIGHT_BITS or not record.get("input_shape"):
        raise CheckpointError(f"quantized checkpoint {str(path)!r} has a malformed quantization record; re-create it")
    config = payload["config"]
    float_model = _float_architecture(config, path)
    float_model.eval()
    prepared = prepare(float_model, torch.zeros(record["input_shape"]), bits=record["bits"])
    with torch.no_grad(), _quiet():
        prepared(torch.zeros(record["input_shape"]))  # observers need one pass before conversion
    model = convert(prepared, bits=record["bits"], arch=config, input_shape=tuple(record["input_shape"]))
    try:
        model.module.load_state_dict(_with_versions({**payload["state_dict"], **record.get("packed", {})},
                                                    record.get("versions", {})))
    except RuntimeError as exc:
        text = " ".join(str(exc).split())[:300]
        raise CheckpointError(f"quantized checkpoint {str(path)!r} does not fit its architecture ({text}); "
                              "re-create it") from exc
    model.layers = dict(record.get("layers", {}))
    model.apkit_meta = payload.get("meta", {})
    return model.eval()


def _with_versions(state: dict, versions: Mapping[str, Mapping]) -> OrderedDict:
    ordered = OrderedDict(state)
    ordered._metadata = OrderedDict((k, dict(v)) for k, v in versions.items())
    return ordered


def refuse_quantized_state(state: Mapping[str, torch.Tensor], path: str | os.PathLike) -> None:
    """Refuse a plain state dict of an int8 model: its graph cannot be rebuilt from an architecture name alone."""
    packed = any(str(k).endswith("_packed_params") for k in state)
    if packed or any(isinstance(v, torch.Tensor) and v.dtype in _QUANTIZED_DTYPES for v in state.values()):
        raise CheckpointError(
            f"{str(path)!r} is a plain state_dict of a quantized (int8) model, which apkit cannot rebuild: its "
            "quantization config is not recorded; save it as an apkit quantized checkpoint (apkit compress --method "
            "ptq or qat writes one; in Python apkit.models.save_checkpoint) and pass that file as PATH")
