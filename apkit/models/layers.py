"""Default layers per architecture: where attribution maps are taken and where attribution is matched.

Layers are addressed by dotted name (:func:`apkit.core.modules.get_layer`), so one setting serves a
teacher and its pruned or narrower student.

Models built by :func:`apkit.models.create` name their layers (``attribution_layer``,
``matching_layer``).  For any other CNN the attribution layer is found by a probe,
:func:`spatial_layers`: one forward pass that records which modules output a spatial map, and
:func:`default_layer` picks the last such map before global pooling (the rule is documented
there).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from apkit.core.errors import ValidationError
from apkit.core.modules import evaluating, unwrap
from apkit.core.names import LAYER_KIND_NAMES
from apkit.core.validation import check_choice, check_tensor

#: Side of the zero image the probe uses when no example inputs are given (ImageNet's 224).
PROBE_SIZE = 224

# Layers that only resample a map (their output is a coarser copy of one computed before them):
# the map before them is the candidate, as for apkit's VGGs (the ReLU before pool5).
_POOLING = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.LPPool2d,
            nn.FractionalMaxPool2d)
# Layers that hand their input on unchanged in eval mode: never preferred over the layer that computed it.
_PASS_THROUGH = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.AlphaDropout, nn.Identity)


@dataclass(frozen=True)
class _Call:
    """One finished call of a module during the probe: its name, the module, and its output's identity."""

    name: str
    module: nn.Module
    shape: torch.Size
    key: tuple  # (address, offset, shape, strides): equal for the same tensor handed on by several modules

    @property
    def spatial(self) -> bool:
        return len(self.shape) == 4 and self.shape[2] > 1 and self.shape[3] > 1


def _probe(model: nn.Module, example_inputs: torch.Tensor) -> list[_Call]:
    """Every module call of one eval-mode, no-grad forward pass, in the order the calls finish.

    Only identities are kept (no output tensors), so the probe holds no activations; every hook
    is removed when the pass ends or raises.
    """
    calls: list[_Call] = []
    handles = []

    def hook_for(name: str):
        def hook(module, _inputs, output):
            if isinstance(output, torch.Tensor):
                key = (output.data_ptr(), output.storage_offset(), tuple(output.shape), output.stride())
                calls.append(_Call(name, module, output.shape, key))

        return hook

    net = unwrap(model)
    try:
        for name, module in net.named_modules():
            if name:  # the model itself outputs logits
                handles.append(module.register_forward_hook(hook_for(name)))
        with evaluating(net), torch.no_grad():
            net(example_inputs)
    finally:
        for handle in handles:
            handle.remove()
    return calls


def spatial_layers(model: nn.Module, example_inputs: torch.Tensor) -> dict[str, torch.Size]:
    """The modules whose output is a spatial map ``(N, K, h, w)`` with ``h > 1`` and ``w > 1``, with its shape.

    One forward pass of ``example_inputs`` runs in eval mode under ``torch.no_grad()``; the
    model's modes, parameters and hooks are left as they were, and nothing is cached on it.

    Parameters
    ----------
    model : torch.nn.Module
    example_inputs : Tensor (N, C, H, W)
        Images of the size to be explained (the shapes of the maps depend on it); one is enough.

    Returns
    -------
    dict
        ``{dotted name: output shape}`` in the order the calls finish (a block after the layers
        inside it).  A module called several times is listed at its last call, with that call's
        output, as :func:`apkit.core.modules.capture_outputs` records it.

    Examples
    --------
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    >>> spatial_layers(net, torch.zeros(1, 3, 8, 8))
    {'0': torch.Size([1, 4, 6, 6]), '1': torch.Size([1, 4, 6, 6])}
    """
    example_inputs = check_tensor(example_inputs, "example_inputs", ndim=4, floating=True)
    last = {call.name: (index, call) for index, call in enumerate(_probe(model, example_inputs))}
    ordered = [call for _, call in sorted(last.values(), key=lambda item: item[0])]
    return {call.name: call.shape for call in ordered if call.spatial}


def _last_map(calls: list[_Call]) -> list[_Call] | None:
    """The calls that hand on the last spatial map computed before global pooling.

    Scanning back from the end of the pass, each spatial output is taken with the calls just
    before it that output the same tensor (a BatchNorm, the in-place activation after it, the
    blocks returning it).  A map first produced by a pooling layer is skipped: it only
    resamples the map before it (VGG's pool5 and adaptive average pool).
    """
    index = len(calls) - 1
    while index >= 0:
        if not calls[index].spatial:
            index -= 1
            continue
        start = index
        while start > 0 and calls[start - 1].key == calls[index].key:
            start -= 1
        if not isinstance(calls[start].module, _POOLING):
            return calls[start:index + 1]
        index = start - 1
    return None


def _name_of(run: list[_Call], stem: str) -> str:
    """The name to give the map: the outermost block returning it that does not also hold the stem.

    Within ``run`` (finishing order: layers first, then the blocks around them, innermost
    first), the last layer that computes the map (an activation rather than the BatchNorm it
    overwrote in place, never a dropout or identity) is the start; each enclosing block that
    returns the same tensor is preferred to it, as the unit a user names (``layer4``,
    ``features.18``), up to but excluding a block that also holds the first layer of the network
    (a whole backbone such as ``features``, whose name would hide which map is meant).
    """
    leaves = [call for call in run if next(call.module.children(), None) is None] or run[:1]
    computing = [call for call in leaves if not isinstance(call.module, _PASS_THROUGH)] or leaves
    chosen = start = computing[-1].name
    for call in run:
        encloses = start.startswith(call.name + ".")
        holds_stem = stem == call.name or stem.startswith(call.name + ".")
        if encloses and not holds_stem:
            chosen = call.name
    return chosen


def _zero_image(model: nn.Module) -> torch.Tensor:
    """A ``(1, C, 224, 224)`` zero image: C from the first layer with ``in_channels`` (else 3), dtype and
    device from the model's first floating-point parameter or buffer."""
    net = unwrap(model)
    channels = next((m.in_channels for m in net.modules() if isinstance(getattr(m, "in_channels", None), int)), 3)
    tensors = [t for t in (*net.parameters(), *net.buffers()) if t.is_floating_point()]
    dtype, device = (tensors[0].dtype, tensors[0].device) if tensors else (torch.get_default_dtype(), "cpu")
    return torch.zeros(1, channels, PROBE_SIZE, PROBE_SIZE, dtype=dtype, device=device)


def _probed_layer(model: nn.Module, example_inputs: torch.Tensor | None) -> str:
    if example_inputs is None:
        example_inputs = _zero_image(model)
        try:
            calls = _probe(model, example_inputs)
        except Exception as exc:  # the model's own error, on an input size it may not accept
            raise ValidationError(
                f"cannot choose a default attribution layer for {type(model).__name__}: probing it with a zero "
                f"image of shape {tuple(example_inputs.shape)} failed ({exc}); pass example_inputs=<a batch of "
                "its inputs>, or layer='<dotted module name>' to the attribution method"
            ) from exc
    else:
        example_inputs = check_tensor(example_inputs, "example_inputs", ndim=4, floating=True)
        calls = _probe(model, example_inputs)
    run = _last_map(calls)
    if run is None:
        raise ValidationError(
            f"cannot choose a default attribution layer for {type(model).__name__}: no layer outputs a spatial "
            f"map (N, K, h, w) with h, w > 1 for inputs of shape {tuple(example_inputs.shape)}; pass larger "
            "inputs or layer='<dotted module name>'"
        )
    return _name_of(run, calls[0].name)


def default_layer(model: nn.Module, kind: str = "attribution", example_inputs: torch.Tensor | None = None) -> str:
    """The layer apkit uses by default for ``kind`` ("attribution" or "matching").

    Models built by :func:`apkit.models.create` carry ``attribution_layer`` and
    ``matching_layer`` attributes, which are returned as they are.

    For any other model the attribution layer is chosen by the probe :func:`spatial_layers`:
    the last layer whose output is a spatial map ``(N, K, h, w)``, ``h, w > 1``, before global
    pooling, as torchcam's ``locate_candidate_layer`` chooses, with two refinements:

    * a map produced by a pooling layer is skipped for the map it pools (torchvision's VGGs: the
      last ReLU ``features.27`` of VGG11-BN, not pool5 or the adaptive average pool);
    * of the modules that output that same tensor, the outermost block returning it is named,
      but never one that also holds the network's first layer: ``layer4`` of a ResNet,
      ``features.18`` (not ``features``) of MobileNetV2, ``features.12`` of MobileNetV3-small;
      without such a block, the activation that computed the map (not the BatchNorm it
      overwrote in place, nor a dropout).

    The matching layer of any other model is the same layer: attribution is matched where the
    audit takes its maps, at the size of the images given.  (Call :func:`map_size` to check how
    coarse that map is at the model's input size.)

    Parameters
    ----------
    model : torch.nn.Module
    kind : {"attribution", "matching"}
    example_inputs : Tensor (N, C, H, W), optional
        Images of the size to be explained; the probe runs on them (the attribution methods
        pass the images they explain).  Without them it runs on a zero image of
        ``(1, C, 224, 224)``, ``C`` the input channels of the model's first layer.  Nothing is
        cached on the model.

    Examples
    --------
    >>> from torch import nn
    >>> from torchvision.models import resnet18
    >>> default_layer(resnet18(weights=None)), default_layer(resnet18(weights=None), "matching")
    ('layer4', 'layer4')
    >>> block = lambda c_in, c_out: nn.Sequential(nn.Conv2d(c_in, c_out, 3), nn.BatchNorm2d(c_out), nn.ReLU())
    >>> net = nn.Sequential(block(3, 8), block(8, 8), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(8 * 8 * 8, 2))
    >>> default_layer(net, example_inputs=torch.zeros(1, 3, 20, 20))
    '1'
    """
    check_choice(kind, "layer kind", LAYER_KIND_NAMES)
    named = getattr(model, f"{kind}_layer", None)
    if isinstance(named, str):
        return named
    return _probed_layer(model, example_inputs)


#: Maps smaller than this (on either side) are too coarse to compare attributions well.
MIN_MAP_SIDE = 4


def map_size(model: nn.Module, layer: str, example_inputs: torch.Tensor) -> tuple[int, int]:
    """The ``(h, w)`` of the map ``layer`` outputs for ``example_inputs`` (one probe pass, no grad).

    Examples
    --------
    >>> from torchvision.models import resnet18
    >>> map_size(resnet18(weights=None), "layer4", torch.zeros(1, 3, 64, 64))
    (2, 2)
    """
    example_inputs = check_tensor(example_inputs, "example_inputs", ndim=4, floating=True)
    shapes = {call.name: call.shape for call in _probe(model, example_inputs)}
    shape = shapes.get(layer)
    if shape is None or len(shape) != 4:
        found = [name for name, s in shapes.items() if len(s) == 4]
        raise ValidationError(f"layer {layer!r} of {type(model).__name__} outputs no (N, K, h, w) map for inputs of "
                              f"shape {tuple(example_inputs.shape)}; layers with maps: {', '.join(found[-8:])}")
    return int(shape[2]), int(shape[3])
