"""Rule-based backward passes over a traced module graph, shared by LRP, Excitation Backprop and RAP.

The model is traced once with ``torch.fx`` (in eval mode) into a graph of calls.  A forward pass
over the graph stores every intermediate value of the images; a backward walk then sends
"relevance" from the target logit to the input (or to a named layer), node by node, with a
method-specific :class:`Rules` object for the layers that carry weights and for additions.
Working on the graph rather than with module hooks is what makes two things simple: a module
called twice (the one ``relu`` of a torchvision BasicBlock) is two nodes, and a residual addition
is a node of its own.

Relevance is batched over (image, class) pairs: per-image quantities (activations, the
denominators of the rules) are computed once per image and gathered for the pairs, so many
classes of one image cost one forward pass.

What every method shares:

* a BatchNorm that directly follows a convolution or linear layer is folded into it (exact in
  eval mode); any other BatchNorm, dropout, identity and torchvision's ``StochasticDepth``
  (identity in eval mode) pass relevance unchanged;
* **pass-through rule** for the elementwise activations ReLU, ReLU6, LeakyReLU (slope >= 0),
  Hardswish, SiLU, GELU, ELU, CELU, SELU and Mish: relevance passes unchanged, as zennit's
  ``Pass`` rule does for activations.  Each keeps the sign of its input (or gives 0), so the
  rule of the layer above, which splits relevance by the signs of its inputs, sees the same
  split below the activation;
* **gate rule** for a product ``x * gate`` (``operator.mul``, ``torch.mul``, ``Tensor.mul``)
  whose gate is the output of a Sigmoid or Hardsigmoid (module, function or method, possibly
  reshaped, unsqueezed or expanded), as in torchvision's ``SqueezeExcitation``: the gate is a
  constant weight on ``x``, relevance flows to ``x`` unchanged and the gate branch gets none (the
  usual LRP practice for multiplicative gates).  The gate is told by this structure, not by
  its shape; ``x`` must have the product's shape (the gate broadcasts onto it, e.g. with
  singleton spatial dimensions).  A product with a number passes relevance to the tensor.  A
  Sigmoid or Hardsigmoid that relevance would have to cross is not supported;
* max-pooling is winner-take-all (relevance follows the gradient to the arg-max);
* average pooling (and spatial means) use the proportional rule ``R_in = x * T(R / pool(x))``;
* reshapes and concatenations reshape or split relevance.

Which nodes relevance reaches is known from the graph alone, so every unsupported node on the
way (and only those: nothing below a stop layer, nothing in a gate branch) is listed in one
error when the plan is made, before any relevance is computed.

Unstructured pruning masks (``weight_orig`` / ``weight_mask``) are applied: rules see the
effective weight.
"""

from __future__ import annotations

import abc
import builtins
import contextlib
import copy
import inspect
import math
import operator
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn
from torch.ao.quantization import FakeQuantizeBase
from torchvision.ops import StochasticDepth, stochastic_depth

from apkit.attribution.base import Method, check_classes, check_layer_output
from apkit.core.errors import ValidationError
from apkit.core.modules import evaluating

# Node kinds, by module type, function and method name.
# On the CPU the backward walk is bound by memory traffic once one pass's pair-sized tensors outgrow
# the caches: it walks the pairs of a chunk in groups whose widest tensor holds about this many
# elements (2 pairs of VGG16 at 227x227, 20 of a 1/8-width student).  On 2 cores, for 17 pairs of 8
# images through VGG16-BN, that made RAP 1.5x and LRP 1.2x faster than one walk of all 17 pairs.
# Other devices walk every pair at once.
_CPU_GROUP_ELEMENTS = 1 << 23

_PASS_MODULES = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.Hardswish, nn.SiLU, nn.GELU, nn.ELU, nn.CELU, nn.SELU,
                 nn.Mish)
# A fake quantizer (a quantized model's twin) rounds each value to its grid: elementwise and sign-keeping.
_IDENTITY_MODULES = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.AlphaDropout, nn.Identity, StochasticDepth,
                     FakeQuantizeBase)
_GRADIENT_MODULES = (nn.MaxPool1d, nn.MaxPool2d, nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d)
_NORM_MODULES = (nn.AvgPool1d, nn.AvgPool2d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d)
_BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d)
# How the backward walk treats each kind of module (the first match wins).
_MODULE_KINDS = (
    ((nn.Conv2d, nn.Linear), "linear"), (_BATCHNORMS, "batchnorm"), (_PASS_MODULES, "identity"),
    (_IDENTITY_MODULES, "identity"), ((nn.Sigmoid, nn.Hardsigmoid), "sigmoid"), (_GRADIENT_MODULES, "gradient"),
    (_NORM_MODULES, "norm"), (nn.Flatten, "reshape"),
)
_FUNCTIONS = {
    F.relu: "identity", torch.relu: "identity", F.relu6: "identity", F.leaky_relu: "identity",
    F.hardswish: "identity", F.silu: "identity", F.gelu: "identity", F.elu: "identity", F.celu: "identity",
    F.selu: "identity", torch.selu: "identity", F.mish: "identity", F.dropout: "identity",
    torch.sigmoid: "sigmoid", F.sigmoid: "sigmoid", F.hardsigmoid: "sigmoid",
    operator.add: "add", torch.add: "add", operator.mul: "mul", torch.mul: "mul",
    torch.flatten: "reshape", torch.reshape: "reshape", torch.unsqueeze: "broadcast",
    torch.cat: "cat",
    F.max_pool2d: "gradient", F.adaptive_max_pool2d: "gradient",
    F.avg_pool2d: "norm", F.adaptive_avg_pool2d: "norm", torch.mean: "norm",
    builtins.getattr: "shape",
}
_METHODS = {
    "relu": "identity", "contiguous": "identity", "sigmoid": "sigmoid",
    "add": "add", "__add__": "add", "mul": "mul", "__mul__": "mul",
    "view": "reshape", "reshape": "reshape", "flatten": "reshape",
    "expand": "broadcast", "expand_as": "broadcast", "unsqueeze": "broadcast",
    "mean": "norm", "size": "shape", "dim": "shape",
}
SUPPORTED = (
    "Conv2d, Linear (each with an optional BatchNorm folded in), BatchNorm, the activations ReLU, ReLU6, "
    "LeakyReLU, Hardswish, SiLU, GELU, ELU, CELU, SELU and Mish (relevance passes unchanged), products "
    "x * gate with a Sigmoid or Hardsigmoid gate (squeeze-and-excitation), Dropout, Identity, StochasticDepth, "
    "MaxPool, AvgPool, AdaptiveAvgPool, AdaptiveMaxPool, Flatten, torch.flatten/reshape/view, mean, torch.cat "
    "and tensor additions"
)
# Activations whose outputs are never negative (rules skip the negative part of what they feed).
_RELU_MODULES = (nn.ReLU, nn.ReLU6)
_RELU_CALLS = (F.relu, torch.relu, F.relu6, "relu")
# Kinds whose nodes the backward walk cannot cross; "shape" nodes (x.size()) carry no relevance at all.
_UNSUPPORTED = ("unknown", "sigmoid", "mul", "broadcast")


def negligible(dtype: torch.dtype) -> float:
    """Largest denominator that counts as zero: the square root of the smallest normal number (1e-154 in
    float64, 1e-19 in float32; the smallest normal itself for 16-bit types).

    Rules compute ``x * T(R / z)``: with activations that are never exactly zero (SiLU, GELU far
    below 0 give 1e-300 and the like), ``R / z`` would overflow before ``x`` brings it back, and
    ``inf * 0`` is NaN.  Such units carry no relevance, as with zennit's stabilizer.
    """
    info = torch.finfo(dtype)
    return info.tiny ** 0.5 if info.bits >= 32 else info.tiny


def safe_div(numerator: torch.Tensor, denominator: torch.Tensor) -> torch.Tensor:
    """``numerator / denominator`` where the denominator is non-zero, 0 where it is zero (or negligible)."""
    return torch.where(denominator.abs() > negligible(denominator.dtype), numerator / denominator, 0.0)


def safe_inverse(denominator: torch.Tensor) -> torch.Tensor:
    """``1 / denominator`` where it is non-zero, else 0 (per image, then gathered for the pairs)."""
    return safe_div(torch.ones_like(denominator), denominator)


def positive_inverse(denominator: torch.Tensor) -> torch.Tensor:
    """:func:`safe_inverse` of a denominator known to be ``>= 0`` (a sum of non-negative products, as in the
    z+ and Excitation Backprop rules): the same values in two passes over the tensor instead of five.
    Negligible denominators become ``inf``, whose inverse is 0 (a NaN denominator, which no sum of finite
    products gives, also becomes 0).

    Examples
    --------
    >>> positive_inverse(torch.tensor([4.0, 0.0, 1e-30])).tolist()
    [0.25, 0.0, 0.0]
    """
    return torch.threshold(denominator, negligible(denominator.dtype), math.inf).reciprocal_()


def walk_layout(inputs: torch.Tensor) -> torch.memory_format:
    """The memory layout of the backward walk: channels-last for images on the CPU.

    mkldnn computes convolutions channels-last; given NCHW tensors it converts every input and output,
    which costs more than the convolution itself for depthwise and 1x1 layers (a depthwise 3x3 layer
    of MobileNetV2, 8 images: 36 ms in NCHW, 8 ms channels-last).  Depthwise and most 1x1 convolutions
    give bit-identical values in both layouts; some layers (dense 3x3, 1x1 on tiny maps) sum in another
    order, a change of float32 rounding.  Other devices keep the input's layout (not measured there).
    """
    if inputs.dim() == 4 and inputs.device.type == "cpu":
        return torch.channels_last
    return torch.contiguous_format


def memory_format(tensor: torch.Tensor) -> torch.memory_format:
    """``torch.channels_last`` for a 4-D tensor stored channels-last, else ``torch.contiguous_format``.

    Examples
    --------
    >>> memory_format(torch.zeros(1, 3, 4, 4).contiguous(memory_format=torch.channels_last))
    torch.channels_last
    """
    if tensor.dim() == 4 and not tensor.is_contiguous() and tensor.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


def per_sample_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum over every dimension but the first, kept for broadcasting: (m, ...) -> (m, 1, ..., 1)."""
    return tensor.sum(dim=tuple(range(1, tensor.dim())), keepdim=True)


def effective_weight(module: nn.Module) -> torch.Tensor:
    """The weight the module computes with: ``weight_orig * weight_mask`` under a pruning mask."""
    if hasattr(module, "weight_orig") and hasattr(module, "weight_mask"):
        return (module.weight_orig * module.weight_mask).detach()
    return module.weight.detach()


@dataclass
class LinearLayer:
    """A convolution or linear layer (with a folded BatchNorm), as the rules see it.

    ``forward(x, w)`` is the layer's map without bias for any weight ``w`` (e.g. its positive
    part); ``transpose(s, w, shape)`` is its adjoint, sending output-shaped ``s`` back to an
    input of ``shape``.  ``first``: it reads the network input; ``top``: no other weighted layer
    lies between it and the output; ``nonnegative``: its input is known from the graph to be
    ``>= 0`` (the output of a ReLU, possibly pooled or reshaped), so rules may skip its negative part.
    """

    name: str
    module: nn.Module
    weight: torch.Tensor
    bias: torch.Tensor | None
    first: bool
    top: bool
    nonnegative: bool = False

    def forward(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        m = self.module
        if isinstance(m, nn.Conv2d):
            return F.conv2d(x, weight, None, m.stride, m.padding, m.dilation, m.groups)
        return F.linear(x, weight)

    def transpose(self, s: torch.Tensor, weight: torch.Tensor, shape: torch.Size) -> torch.Tensor:
        m = self.module
        if not isinstance(m, nn.Conv2d):
            return s @ weight
        if isinstance(m.padding, str):  # "same"/"valid": let autograd work out the transpose
            with torch.enable_grad():
                x = torch.zeros(shape, dtype=s.dtype, device=s.device, requires_grad=True)
                return torch.autograd.grad(self.forward(x, weight), x, s)[0]
        # The convolution's own input-gradient kernel, told the layout of the relevance by an (unread,
        # uninitialised) input of that layout.  torch.nn.grad.conv2d_input passes an expanded tensor
        # instead, with which mkldnn computes channels-last relevance in NCHW and converts it: 4x slower
        # for a depthwise layer.
        layout = torch.empty(shape, dtype=s.dtype, device=s.device, memory_format=memory_format(s))
        return torch.ops.aten.convolution_backward(
            s, layout, weight, None, m.stride, m.padding, m.dilation, False, (0, 0), m.groups, (True, False, False)
        )[0]

    def transposes(self, s: torch.Tensor, weights: tuple[torch.Tensor, ...],
                   shape: torch.Size) -> tuple[torch.Tensor, ...]:
        """``transpose(s, w, shape)`` for each weight ``w``: one transpose with the weights stacked along the
        input channels where the layer is dense (it reads ``s`` once; the same values bit for bit, each input
        channel's sum is the same), else one per weight (a grouped convolution's stacked weights would not
        be depthwise any more)."""
        m = self.module
        if isinstance(m, nn.Conv2d) and m.groups != 1:
            return tuple(self.transpose(s, w, shape) for w in weights)
        stacked = self.transpose(s, torch.cat(weights, 1), (shape[0], shape[1] * len(weights), *shape[2:]))
        return stacked.split(shape[1], 1)

    def bias_of(self, relevance: torch.Tensor) -> torch.Tensor:
        """Per-pair sum of the bias over the output units, weighted by ``relevance``: (m, 1, ...)."""
        if self.bias is None:
            return torch.zeros_like(per_sample_sum(relevance))
        shape = (1, -1, 1, 1) if relevance.dim() == 4 else (1, -1)
        return per_sample_sum(relevance * self.bias.view(shape))


class Rules(abc.ABC):
    """Method-specific parts of a backward pass; subclasses implement ``start`` and ``linear``.

    ``start(logits, pairs)`` gives the relevance at the logits, one row per pair;
    ``linear(layer, x, images, relevance)`` sends relevance through a weighted layer, where
    ``x`` holds the layer's input for each image and ``images`` maps pairs to images;
    ``add(terms, total, relevance)`` splits the relevance of a sum (default: proportionally).
    """

    @abc.abstractmethod
    def start(self, logits: torch.Tensor, pairs: torch.Tensor) -> torch.Tensor:
        """Relevance at the logits, ``(M, num_classes)``."""

    @abc.abstractmethod
    def linear(self, layer: LinearLayer, x: torch.Tensor, images: torch.Tensor,
               relevance: torch.Tensor) -> torch.Tensor:
        """Relevance at the layer's input, ``(M, *x.shape[1:])``."""

    def add(self, terms: list[torch.Tensor], total: torch.Tensor, relevance: torch.Tensor) -> list[torch.Tensor]:
        """Proportional split of a sum: term k gets ``x_k / sum * R`` (zennit's ``Norm`` rule)."""
        share = safe_div(relevance, total)
        return [term * share for term in terms]


class _Tracer(fx.Tracer):
    """Keeps the stop layer, torchvision's StochasticDepth, fake quantizers (and the usual torch.nn modules) as
    single calls."""

    def __init__(self, stop: str | None):
        super().__init__()
        self.stop = stop

    def is_leaf_module(self, module: nn.Module, qualified_name: str) -> bool:
        return (qualified_name == self.stop or isinstance(module, (StochasticDepth, FakeQuantizeBase))
                or super().is_leaf_module(module, qualified_name))


def _trace(model: nn.Module, stop: str | None) -> fx.Graph:
    """The graph of ``model``, traced in eval mode: flags read while tracing (``F.dropout(training=...)``,
    stochastic depth) are then those of attribution."""
    try:
        with evaluating(model):
            return _Tracer(stop).trace(model)
    except Exception as exc:  # torch.fx raises many types for untraceable code
        raise ValidationError(
            f"LRP, Excitation Backprop and RAP need a model torch.fx can trace; tracing "
            f"{type(model).__name__} failed: {exc}"
        ) from exc


def _module_kind(module: nn.Module) -> str:
    if isinstance(module, nn.Conv2d) and module.padding_mode != "zeros":
        return "unknown"
    if isinstance(module, nn.LeakyReLU) and module.negative_slope < 0:
        return "unknown"  # it flips the sign of negative inputs: the pass-through rule does not apply
    return next((kind for types, kind in _MODULE_KINDS if isinstance(module, types)), "unknown")


def _is_relu(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    if node.op == "call_module":
        return isinstance(modules[node.target], _RELU_MODULES)
    return node.op in ("call_function", "call_method") and any(node.target is c or node.target == c
                                                                  for c in _RELU_CALLS)


def _passes_unchanged(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    """Dropout, identity, stochastic depth and ``.contiguous()``: their output is their input (in eval mode)."""
    if node.op == "call_module":
        return isinstance(modules[node.target], _IDENTITY_MODULES)
    return node.target in (F.dropout, stochastic_depth, "contiguous")


def _function_kind(node: fx.Node) -> str:
    if node.target is stochastic_depth:  # identity only when called with training=False (eval-mode tracing)
        training = node.args[3] if len(node.args) > 3 else node.kwargs.get("training", True)
        return "identity" if training is False else "unknown"
    return _FUNCTIONS.get(node.target, "unknown")


class Plan:
    """The traced graph of ``model`` with every node classified, ready for forward/backward passes.

    Raises :class:`~apkit.core.errors.ValidationError` listing every node that relevance would have to
    cross and no rule supports.

    Parameters
    ----------
    model : torch.nn.Module
    stop : str, optional
        Dotted name of the layer where relevance is collected; ``None`` for the input.
    """

    def __init__(self, model: nn.Module, stop: str | None = None):
        self.model = model
        self.graph = _trace(model, stop)
        self.nodes = list(self.graph.nodes)
        self.modules = dict(model.named_modules())
        placeholders = [n for n in self.nodes if n.op == "placeholder"]
        if len(placeholders) != 1:
            raise ValidationError(f"the model's forward must take one input tensor, it takes {len(placeholders)}")
        self.input = placeholders[0]
        output = [n for n in self.nodes if n.op == "output"][0]
        if not isinstance(output.args[0], fx.Node):
            raise ValidationError("the model must return one tensor of logits (N, num_classes)")
        self.output = output.args[0]
        self.stop = None
        if stop is not None:
            calls = [n for n in self.nodes if n.op == "call_module" and n.target == stop]
            if not calls:
                raise ValidationError(f"layer {stop!r} is not called in the model's forward pass")
            self.stop = calls[-1]  # a module called several times: its last call, as forward hooks see it
        self.reasons: dict[fx.Node, str] = {}  # why a node is unsupported, where its type alone does not say
        self.kind = {node: self._classify(node) for node in self.nodes}
        self.batched = self._batched()
        self.carriers = self._gates()
        self.layers = self._linear_layers()
        self._check_supported()
        self.walk_reads = self._walk_reads()
        self.shapes: dict[fx.Node, torch.Size] = {}  # filled by forward()
        self._out_of_place: dict[str, nn.Module] = {}

    # -- classification --------------------------------------------------------------------------
    def _classify(self, node: fx.Node) -> str:
        if node is self.stop:
            return "stop"
        if node.op == "call_module":
            return _module_kind(self.modules[node.target])
        if node.op == "call_function":
            return _function_kind(node)
        if node.op == "call_method":
            return _METHODS.get(node.target, "unknown")
        return node.op  # placeholder, get_attr, output

    def _gates(self) -> dict[fx.Node, fx.Node]:
        """Products that the gate rule covers (their kind becomes "gate"), each with the operand that carries
        relevance; any other product stays "mul" (unsupported), with the reason."""
        carriers = {}
        for node in self.nodes:
            if self.kind[node] == "mul":
                carrier = self._carrier(node)
                if carrier is not None:
                    carriers[node], self.kind[node] = carrier, "gate"
        return carriers

    def _carrier(self, node: fx.Node) -> fx.Node | None:
        operands = list(node.args)
        tensors = [a for a in operands if isinstance(a, fx.Node)]
        if len(operands) != 2 or node.kwargs or not tensors:
            self.reasons[node] = "a product the gate rule does not cover"
            return None
        if len(tensors) == 1:  # x * c: the z-rule of a one-input map passes relevance unchanged, if c keeps signs
            number = operands[1] if operands[0] is tensors[0] else operands[0]
            if isinstance(number, (int, float)) and number > 0:
                return tensors[0]
            self.reasons[node] = f"a product with {number!r}, not a positive number"
            return None
        gates = [a for a in tensors if self._is_gate(a)]
        if len(gates) == 1:
            return tensors[1] if gates[0] is tensors[0] else tensors[0]
        self.reasons[node] = ("a product of two Sigmoid/Hardsigmoid gates" if gates else
                              "a product of two tensors, neither the output of a Sigmoid/Hardsigmoid gate")
        return None

    def _is_gate(self, node: fx.Node) -> bool:
        """Whether ``node`` is the output of a sigmoid, possibly reshaped, unsqueezed or expanded."""
        while self.kind.get(node) in ("reshape", "broadcast") and node.args and isinstance(node.args[0], fx.Node):
            node = node.args[0]
        return self.kind.get(node) == "sigmoid"

    def _relevance_sources(self, node: fx.Node) -> list[fx.Node]:
        """The nodes the backward walk sends ``node``'s relevance to (for an unsupported node: all its inputs,
        so that the walk finds every unsupported node behind it too)."""
        kind = self.kind[node]
        if kind in ("identity", "reshape", "gradient", "norm"):
            return [node.args[0]]
        if kind == "linear":
            return [self.sources[node]]
        if kind == "gate":
            return [self.carriers[node]]
        if kind == "add":
            return [a for a in node.args if isinstance(a, fx.Node)]
        if kind == "cat":
            return list(node.args[0])
        if kind in _UNSUPPORTED:
            return node.all_input_nodes
        return []  # stop, placeholder, get_attr, shape queries

    def _reached(self) -> set[fx.Node]:
        """The nodes relevance reaches from the logits before the walk ends (at the stop layer or the input)."""
        target = self.stop if self.stop is not None else self.input
        position = {node: index for index, node in enumerate(self.nodes)}
        reached: set[fx.Node] = set()
        todo = [self.output]
        while todo:
            node = todo.pop()
            if node in reached or position[node] < position[target]:  # the walk never visits nodes below it
                continue
            reached.add(node)
            if node is not target:
                todo.extend(n for n in self._relevance_sources(node) if isinstance(n, fx.Node))
        return reached

    def _check_supported(self) -> None:
        """One error listing every node relevance would reach and no rule covers (none in a gate branch or
        below the stop layer), raised before anything is computed."""
        reached = self._reached()
        unsupported = [node for node in self.nodes if node in reached and self.kind[node] in _UNSUPPORTED]
        if unsupported:
            listed = "; ".join(self._describe(node) for node in unsupported)
            raise ValidationError(
                f"relevance rules do not support {len(unsupported)} node(s) of {type(self.model).__name__}: "
                f"{listed}; supported: {SUPPORTED}"
            )

    def _walk_reads(self) -> set[fx.Node]:
        """The values the backward walk reads: the inputs of the weighted layers, pools and sums it reaches
        (and the sums themselves); nothing below the stop layer."""
        reads: set[fx.Node] = set()
        for node in self._reached():
            kind = self.kind[node]
            if kind == "linear":
                reads.add(self.sources[node])
            elif kind in ("gradient", "norm"):
                reads.add(node.args[0])
            elif kind == "add":
                reads.update(a for a in node.args if isinstance(a, fx.Node))
                reads.add(node)
        return reads

    def _linear_layers(self) -> dict[fx.Node, LinearLayer]:
        """Weighted layers, with BatchNorms folded, and their first/top flags."""
        layers: dict[fx.Node, LinearLayer] = {}
        sources: dict[fx.Node, fx.Node] = {}  # layer node -> the node holding its input
        folds: dict[fx.Node, tuple[LinearLayer, nn.Module]] = {}  # BatchNorm node -> (its layer, itself)
        for node in self.nodes:
            if self.kind[node] == "linear":
                module = self.modules[node.target]
                bias = None if module.bias is None else module.bias.detach()
                layers[node] = LinearLayer(node.target, module, effective_weight(module), bias, False, False)
                sources[node] = node.args[0]
            elif self.kind[node] == "batchnorm":
                parent = node.args[0]
                if self.kind.get(parent) == "linear" and len(parent.users) == 1:
                    folds[node] = (layers.pop(parent), self.modules[node.target])
                    layers[node] = folds[node][0]  # replaced by the folded layer below, in this place
                    sources[node] = sources.pop(parent)
                    self.kind[parent], self.kind[node] = "folded", "linear"
                else:
                    self.kind[node] = "identity"
        layers.update(zip(folds, _folded([layer for layer, _ in folds.values()], [bn for _, bn in folds.values()])))
        clear = self._clear()
        nonnegative = self._nonnegative()
        for node, layer in layers.items():
            layer.first = self._unquantized(sources[node]) is self.input
            layer.top = clear[node]
            layer.nonnegative = sources[node] in nonnegative
        self.sources = sources
        return layers

    def _clear(self) -> dict[fx.Node, bool]:
        """Whether no weighted layer lies between each node and the output."""
        clear: dict[fx.Node, bool] = {}
        for node in reversed(self.nodes):
            users = list(node.users)
            clear[node] = node is self.output or (
                bool(users) and all(u.op == "output" or (clear.get(u, False) and self.kind[u] != "linear")
                                    for u in users)
            )
        return clear

    def _unquantized(self, node: fx.Node) -> fx.Node:
        """The node a chain of fake quantizers reads (a quantized model's twin quantizes its input first)."""
        while node.op == "call_module" and isinstance(self.modules[node.target], FakeQuantizeBase):
            node = node.args[0]
        return node

    def _nonnegative(self) -> set[fx.Node]:
        """Nodes whose values are ``>= 0`` whatever the input: ReLU outputs, and what pooling, reshapes,
        dropout, concatenation or sums make of such values only."""
        found: set[fx.Node] = set()
        for node in self.nodes:
            inputs = self._sign_sources(node)
            if _is_relu(node, self.modules) or (inputs and all(a in found for a in inputs)):
                found.add(node)
        return found

    def _sign_sources(self, node: fx.Node) -> list:
        """The inputs whose signs decide the sign of ``node``'s value, where it keeps their signs; else []."""
        kind = self.kind[node]
        if kind in ("reshape", "gradient", "norm") or (kind == "identity" and _passes_unchanged(node, self.modules)):
            return [node.args[0]]
        if kind == "cat":
            return list(node.args[0])
        if kind == "add":
            return list(node.args)
        return []

    def _batched(self) -> set[fx.Node]:
        """Nodes computed from the input: their values have one row per image."""
        batched = {self.input}
        for node in self.nodes:
            if any(source in batched for source in node.all_input_nodes):
                batched.add(node)
        return batched

    # -- forward -------------------------------------------------------------------------------
    def _needed(self) -> set[fx.Node]:
        """Nodes whose values the backward walk reads (the others are dropped after their last use)."""
        needed = {self.output, *self.sources.values()}
        for node in self.nodes:
            if self.kind[node] in ("gradient", "norm"):
                needed.update(node.all_input_nodes)
            elif self.kind[node] == "add":
                needed.update(node.all_input_nodes)
                needed.add(node)
        return needed

    def forward(self, inputs: torch.Tensor) -> dict[fx.Node, object]:
        """Values of the nodes the backward walk needs, for ``inputs`` (no autograd graph is kept).

        Every tensor's shape is recorded in ``self.shapes``; values no rule reads are freed as soon
        as their last user has run, which keeps memory near that of the needed activations.
        """
        needed = self._needed()
        last_use = {node: index for index, user in enumerate(self.nodes) for node in user.all_input_nodes}
        env: dict[fx.Node, object] = {}
        self.shapes = {}
        with torch.no_grad():
            for index, node in enumerate(self.nodes):
                if node.op == "output":
                    break
                value = env[node] = self._evaluate(node, env, inputs)
                if isinstance(value, torch.Tensor):
                    self.shapes[node] = value.shape
                for source in node.all_input_nodes:
                    if last_use[source] == index and source not in needed and isinstance(env[source], torch.Tensor):
                        del env[source]
        logits = env[self.output]
        if not isinstance(logits, torch.Tensor) or logits.dim() != 2:
            raise ValidationError("the model must return logits of shape (N, num_classes)")
        self._to_walk_layout(env, walk_layout(inputs))
        return env

    def _to_walk_layout(self, env: dict[fx.Node, object], layout: torch.memory_format) -> None:
        """The values the walk reads, in its layout.  The forward pass computes exactly what the model computes
        (another layout could change the last bits of its activations, and which of two tied values a max-pool
        picks); the walk reads copies, and only of what it reads (Excitation Backprop stops near the top)."""
        for node, value in env.items():
            if node in self.walk_reads and isinstance(value, torch.Tensor) and value.dim() == 4:
                env[node] = value.contiguous(memory_format=layout)

    def images(self, env: dict[fx.Node, object], first: int, stop: int) -> dict[fx.Node, object]:
        """``env`` of the images ``first:stop`` only: views of the values computed from the input."""
        return {node: value[first:stop] if node in self.batched and isinstance(value, torch.Tensor) else value
                for node, value in env.items()}

    def _evaluate(self, node: fx.Node, env: dict, inputs: torch.Tensor):
        if node.op == "placeholder":
            return inputs
        if node.op == "get_attr":
            return operator.attrgetter(node.target)(self.model)
        args = fx.node.map_arg(node.args, lambda n: env[n])
        kwargs = dict(fx.node.map_arg(node.kwargs, lambda n: env[n]))
        if kwargs.get("inplace"):
            kwargs["inplace"] = False  # every intermediate value must survive for the backward walk
        if node.op == "call_module":
            return self._callable(node.target)(*args, **kwargs)
        if node.op == "call_function":
            return node.target(*args, **kwargs)
        return getattr(args[0], node.target)(*args[1:], **kwargs)

    def _callable(self, name: str) -> nn.Module:
        """The module ``name``, as an out-of-place copy where it computes in place: ReLU(inplace=True) and
        the like would overwrite a value the backward walk may still read (a copy, not a clone of the input
        at every call, which would cost one more pass over the tensor)."""
        module = self.modules[name]
        if getattr(module, "inplace", False) is not True:
            return module
        if name not in self._out_of_place:
            self._out_of_place[name] = copy.copy(module)  # shares the parameters; only the flag differs
            self._out_of_place[name].inplace = False
        return self._out_of_place[name]

    def _function(self, node: fx.Node, env: dict) -> Callable[[torch.Tensor], torch.Tensor]:
        """The node as a function of its first input, other arguments fixed (for pooling rules)."""
        if node.op == "call_module":
            return self.modules[node.target]
        args = fx.node.map_arg(node.args[1:], lambda n: env[n])
        kwargs = fx.node.map_arg(node.kwargs, lambda n: env[n])
        if node.op == "call_function":
            return lambda x: node.target(x, *args, **kwargs)
        return lambda x: getattr(x, node.target)(*args, **kwargs)

    # -- backward -----------------------------------------------------------------------------
    def backward(self, env: dict, pairs: torch.Tensor, rules: Rules) -> torch.Tensor:
        """Relevance of each pair at the stop layer (or the input): ``(M, *shape)``.

        ``pairs`` are (image, class) with image indices into the batch ``env`` was computed for.  Rules
        read per-image values for the pairs as ``value[images]``; when the pairs are the images in
        order (one class each), ``images`` is the slice ``:``, a view instead of a copy.
        """
        images = _rows_of(pairs[:, 0], len(env[self.output]))
        relevance: dict[fx.Node, torch.Tensor] = {self.output: rules.start(env[self.output], pairs)}
        target = self.stop if self.stop is not None else self.input
        for node in reversed(self.nodes):
            if node not in relevance:
                continue
            r = relevance.pop(node)
            if node is target:
                return r.contiguous()
            for source, r_in in self._propagate(node, env, images, r, rules=rules):
                relevance[source] = relevance[source] + r_in if source in relevance else r_in
        shape = tuple(self.shapes[target][1:])
        return torch.zeros(len(pairs), *shape, dtype=env[self.output].dtype, device=env[self.output].device)

    def _propagate(self, node: fx.Node, env: dict, images: torch.Tensor, r: torch.Tensor, *, rules: Rules):
        kind = self.kind[node]
        first = node.args[0] if node.args else None
        if kind == "identity":
            return [(first, r)]
        if kind == "gate":
            return self._through_gate(node, r)
        if kind == "reshape":
            return [(first, r.reshape(len(r), *self.shapes[first][1:]))]
        if kind == "linear":
            source = self.sources[node]
            return [(source, rules.linear(self.layers[node], env[source], images, r))]
        if kind in ("gradient", "norm"):
            return self._through_pool(node, env, images, r)
        if kind == "add":
            return self._through_add(node, env, images, r, rules=rules)
        if kind == "cat":
            return self._through_cat(node, r)
        # Not reached: the plan refused every node of another kind on the way (_check_supported).
        raise ValidationError(f"relevance rules do not support {self._describe(node)}; supported: {SUPPORTED}")

    def _through_gate(self, node: fx.Node, r: torch.Tensor):
        """The gate rule: relevance goes to the gated tensor unchanged, none to the gate."""
        carrier = self.carriers[node]
        if self.shapes.get(carrier) != self.shapes.get(node):
            raise ValidationError(
                f"the gate rule needs the gated tensor to have the product's shape, but {node.name} = "
                f"{node.format_node()} has shape {tuple(self.shapes[node])} and its gated operand {carrier.name} "
                f"{tuple(self.shapes.get(carrier, ()))}: the gate must broadcast onto the tensor, not the reverse"
            )
        return [(carrier, r)]

    def _through_pool(self, node: fx.Node, env: dict, images: torch.Tensor, r: torch.Tensor):
        first = node.args[0]
        function = self._function(node, env)
        gradient = self.kind[node] == "gradient"
        with torch.enable_grad():
            x = env[first][images].detach().requires_grad_()
            y = function(x)
            cotangent = r if gradient else safe_div(r, y.detach())
            (grad,) = torch.autograd.grad(y, x, cotangent)
        return [(first, grad if gradient else x.detach() * grad)]

    def _through_add(self, node: fx.Node, env: dict, images: torch.Tensor, r: torch.Tensor, *, rules: Rules):
        terms = [a for a in node.args if isinstance(a, fx.Node) and isinstance(env[a], torch.Tensor)]
        shapes_differ = any(self.shapes[a] != self.shapes[node] for a in terms)
        if len(terms) != len(node.args) or node.kwargs or shapes_differ:
            raise ValidationError(
                f"relevance rules support the sum of equally shaped tensors only, not {node.format_node()}"
            )
        shares = rules.add([env[a][images] for a in terms], env[node][images], r)
        return list(zip(terms, shares))

    def _through_cat(self, node: fx.Node, r: torch.Tensor):
        tensors = node.args[0]
        dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
        if dim == 0:
            raise ValidationError("torch.cat along the batch dimension is not supported by relevance rules")
        sizes = [self.shapes[t][dim] for t in tensors]
        return list(zip(tensors, torch.split(r, sizes, dim=dim)))

    def _describe(self, node: fx.Node) -> str:
        """``name (what it is[: why it is not supported])``, e.g. ``features.1 (Tanh)``."""
        reason = self.reasons.get(node)
        if self.kind[node] == "sigmoid":
            reason = "a sigmoid is supported only as the gate of a product x * gate"
        if node.op == "call_module":
            name, what = node.target, _module_settings(self.modules[node.target])
        elif node.op == "call_method":
            name, what = node.name, f"Tensor.{node.target}"
        else:
            name, what = node.name, getattr(node.target, "__name__", str(node.target))
        return f"{name} ({what}{': ' + reason if reason else ''})"


def _folded(layers: list[LinearLayer], batchnorms: list[nn.Module]) -> list[LinearLayer]:
    """Each layer with the BatchNorm that follows it folded in (exact in eval mode).

    The square roots of all the variances are taken in one call: on two threads ``torch.sqrt`` of even a
    few hundred values runs in parallel, and on a busy machine each call then waits for the second
    thread (7 ms each, 0.4 s for MobileNetV2's 52 BatchNorms, measured under load).
    """
    for layer, bn in zip(layers, batchnorms, strict=True):
        if bn.running_var is None or bn.running_mean is None:
            raise ValidationError(f"BatchNorm after {layer.name!r} has no running statistics to fold")
    variances = [bn.running_var + bn.eps for bn in batchnorms]
    if len({(v.dtype, v.device) for v in variances}) == 1:
        roots = torch.cat(variances).sqrt().split([len(v) for v in variances])
    else:
        roots = [torch.sqrt(v) for v in variances]
    folded = []
    for layer, bn, root in zip(layers, batchnorms, roots, strict=True):
        scale = (bn.weight.detach() if bn.affine else 1.0) / root
        shift = bn.bias.detach() if bn.affine else 0.0
        bias = layer.bias if layer.bias is not None else torch.zeros_like(bn.running_mean)
        weight = layer.weight * scale.view(-1, *([1] * (layer.weight.dim() - 1)))
        folded.append(LinearLayer(layer.name, layer.module, weight, (bias - bn.running_mean) * scale + shift,
                                  False, False))
    return folded


def _rows_of(images: torch.Tensor, count: int) -> torch.Tensor | slice:
    """The index that picks each pair's image from per-image values: ``slice(None)`` (a view) when the
    pairs are images ``0, ..., count - 1`` in order, else ``images`` (a gather)."""
    if len(images) == count and bool((images == torch.arange(count, device=images.device)).all()):
        return slice(None)
    return images


def _module_settings(module: nn.Module) -> str:
    """The module's type, with the setting that makes it unsupported where there is one."""
    if isinstance(module, nn.Conv2d):
        return f"{type(module).__name__} with padding_mode={module.padding_mode!r}"
    if isinstance(module, nn.LeakyReLU):
        return f"{type(module).__name__} with negative_slope={module.negative_slope}"
    return type(module).__name__


class RuleMethod(Method):
    """An attribution method computed by a backward walk over the traced graph with :class:`Rules`."""

    @abc.abstractmethod
    def _rules(self, **options) -> Rules:
        """The rules for one call, built from the call's options."""

    def _options(self) -> list[str]:
        parameters = inspect.signature(self._rules).parameters.values()
        return [p.name for p in parameters if p.kind is inspect.Parameter.KEYWORD_ONLY]

    @contextlib.contextmanager
    def _session(self) -> Iterator[None]:
        self._plan = Plan(self.model, self.layer)  # traced once per call, shared by its chunks
        try:
            yield
        finally:
            self._plan = None

    def _attribute(self, inputs, pairs, **options):
        rules = self._rules(**options)
        env = self._plan.forward(inputs)
        if self.is_layer_method:  # before any relevance: the layer must output a map
            check_layer_output(self.model, self.layer, self._plan.shapes.get(self._plan.stop), inputs)
        logits = env[self._plan.output]
        check_classes(pairs, logits.shape[1])
        parts = [self._plan.backward(env if first is None else self._plan.images(env, first, stop), local, rules)
                 for first, stop, local in self._groups(pairs, inputs)]
        return torch.cat(parts), logits[pairs[:, 0], pairs[:, 1]]

    def _groups(self, pairs: torch.Tensor, inputs: torch.Tensor) -> Iterator[tuple[int | None, int, torch.Tensor]]:
        """``(first image, stop image, pairs renumbered from first)`` of each group the walk takes at once.

        One group of every pair (``first`` None: all images) except on the CPU, where groups of
        consecutive pairs (a chunk's pairs are sorted by image) keep the widest pair-sized tensor
        near ``_CPU_GROUP_ELEMENTS``.
        """
        widest = max((math.prod(shape[1:]) for shape in self._plan.shapes.values()), default=1)
        size = max(1, _CPU_GROUP_ELEMENTS // max(widest, 1))
        images = pairs[:, 0]
        if inputs.device.type != "cpu" or len(pairs) <= size or bool((images[1:] < images[:-1]).any()):
            yield None, len(inputs), pairs
            return
        # Cut between images where possible (an image's rule terms are computed once per group it is in).
        cuts, filled, position = [], 0, 0
        for count in torch.bincount(images).tolist():
            if filled and filled + count > size:
                cuts.append(position)
                filled = 0
            position, filled = position + count, filled + count
            while filled > size:  # one image with more pairs than a group holds
                cuts.append(position - filled + size)
                filled -= size
        for group in torch.tensor_split(pairs, cuts):
            first, stop = int(group[0, 0]), int(group[-1, 0]) + 1
            yield first, stop, torch.stack([group[:, 0] - first, group[:, 1]], 1)
