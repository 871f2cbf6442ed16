"""The mechanics apkit applies to any ``nn.Module``: layers by dotted name, eval mode and restore, output capture.

Attribution methods, the regularizers, training and evaluation all need the same three things,
so they live here once:

* :func:`get_layer` finds a sub-module by its dotted name (``"features.42"``, ``"layer4.1"``);
  naming layers instead of holding module objects lets one setting serve a teacher and its
  pruned or narrower student;
* :func:`evaluating` runs models in eval mode (optionally on another device) and gives each
  sub-module back its own previous mode and each model its device, also when the block raises;
* :func:`capture_outputs` records (and may replace) the outputs of named layers during forward
  passes, with every hook removed when the block exits.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence

import torch
from torch import nn

from apkit.core.errors import UnknownNameError, ValidationError

__all__ = ["called_output", "capture_outputs", "evaluating", "feature_map", "get_layer", "overwritten_in_place",
           "unwrap"]

_WRAPPERS = (nn.DataParallel, nn.parallel.DistributedDataParallel)


def unwrap(model: nn.Module) -> nn.Module:
    """The module whose layer names the user gave (DataParallel and DDP wrap it in ``.module``)."""
    return model.module if isinstance(model, _WRAPPERS) else model


def get_layer(model: nn.Module, name: str) -> nn.Module:
    """Return the sub-module of ``model`` called ``name`` (dotted, as in ``named_modules``).

    Examples
    --------
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
    >>> get_layer(net, "1")
    ReLU()
    """
    if not isinstance(name, str):
        raise ValidationError(f"layer must be a dotted module name such as 'features.42', got {name!r}")
    modules = dict(unwrap(model).named_modules())
    if name not in modules or name == "":
        known = [n for n in modules if n]
        shown = ", ".join(known[:40]) + (", ..." if len(known) > 40 else "")
        raise UnknownNameError(f"unknown layer {name!r} in {type(model).__name__}; choose one of: {shown}")
    return modules[name]


def feature_map(output: object, layer: str, purpose: str) -> torch.Tensor:
    """Check that a layer's output is a ``(N, K, h, w)`` feature map; ``purpose`` names who needs it."""
    if not isinstance(output, torch.Tensor) or output.dim() != 4:
        got = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
        raise ValidationError(
            f"layer {layer!r} must output a (batch, channels, height, width) feature map for {purpose}, "
            f"got {got}; choose a convolutional layer"
        )
    return output


@contextlib.contextmanager
def evaluating(*models: nn.Module, device: torch.device | str | None = None) -> Iterator[None]:
    """Run ``models`` in eval mode (on ``device`` if given) inside the block, then restore them.

    The train/eval flag is saved per sub-module, so a model whose parts are in mixed modes comes
    back exactly as it was; a model moved to ``device`` goes back to the device of its first
    parameter.

    Examples
    --------
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Linear(2, 2), nn.Dropout())
    >>> with evaluating(net):
    ...     net[1].training
    False
    >>> net[1].training
    True
    """
    states = []
    for model in models:
        parameter = next(iter(model.parameters()), None)
        states.append((model, None if parameter is None else parameter.device,
                       [(m, m.training) for m in model.modules()]))
    try:
        for model in models:
            if device is not None:
                model.to(device)
            model.eval()
        yield
    finally:
        for model, previous, modes in states:
            for module, mode in modes:
                module.training = mode
            if device is not None and previous is not None and previous != torch.device(device):
                model.to(previous)


@contextlib.contextmanager
def capture_outputs(
    model: nn.Module, layers: Sequence[str], *, replace: Callable[[str, object], object] | None = None
) -> Iterator[dict[str, object]]:
    """Record the output of each named layer (its last call) during forward passes inside the block.

    Parameters
    ----------
    model : torch.nn.Module
    layers : sequence of str
        Dotted layer names; unknown names raise, listing the known ones.
    replace : callable, optional
        ``replace(name, output) -> new_output``: what the layer hands on instead (and what is
        recorded), e.g. a detached leaf that requires grad.

    Yields
    ------
    dict
        ``{name: output}``, filled as the layers run (:func:`called_output` reads it and refuses a
        layer that never ran; :func:`overwritten_in_place` tells whether a later layer changed a
        recorded output in place).

    Examples
    --------
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Linear(2, 3), nn.ReLU())
    >>> with capture_outputs(net, ["0"]) as outputs:
    ...     _ = net(torch.zeros(1, 2))
    >>> outputs["0"].shape
    torch.Size([1, 3])
    """
    store: dict = {}
    handles = []

    def hook_for(name: str):
        def hook(_module, _inputs, output):
            if replace is not None:
                output = replace(name, output)
            store[name] = output
            if isinstance(output, torch.Tensor):
                store[(name, "version")] = output._version
            return output

        return hook

    try:
        for name in layers:
            handles.append(get_layer(model, name).register_forward_hook(hook_for(name)))
        yield store
    finally:
        for handle in handles:
            handle.remove()


def called_output(store: dict, layer: str) -> object:
    """The recorded output of ``layer``; raises when the forward pass never called it."""
    if layer not in store:
        raise ValidationError(f"layer {layer!r} was not called in the model's forward pass")
    return store[layer]


def overwritten_in_place(store: dict, layer: str) -> bool:
    """True when a later layer modified ``layer``'s recorded output in place (e.g. ``ReLU(inplace=True)``)."""
    output = store.get(layer)
    return isinstance(output, torch.Tensor) and output._version != store.get((layer, "version"))
