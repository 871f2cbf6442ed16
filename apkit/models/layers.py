"""Layers addressed by dotted name, default layers per architecture, and activation capture.

Naming layers (``"features.42"``, ``"layer4"``) rather than holding module objects lets one
configuration serve a teacher and its pruned or narrower student.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch
from torch import nn

from apkit.errors import UnknownNameError, ValidationError

LAYER_KINDS = ("attribution", "matching")


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
    modules = dict(model.named_modules())
    if name not in modules or name == "":
        known = [n for n in modules if n]
        shown = ", ".join(known[:40]) + (", ..." if len(known) > 40 else "")
        raise UnknownNameError(f"unknown layer {name!r} in {type(model).__name__}; choose one of: {shown}")
    return modules[name]


def default_layer(model: nn.Module, kind: str = "attribution") -> str:
    """The layer apkit uses by default for ``kind`` ("attribution" or "matching").

    Models built by :func:`apkit.models.create` carry ``attribution_layer`` and
    ``matching_layer`` attributes.  For any other CNN the output of the last ReLU (or, if there
    is none, the last convolution) is used.
    """
    if kind not in LAYER_KINDS:
        raise UnknownNameError(f"unknown layer kind {kind!r}; choose one of: {', '.join(LAYER_KINDS)}")
    named = getattr(model, f"{kind}_layer", None)
    if isinstance(named, str):
        return named
    candidates = [n for n, m in model.named_modules() if isinstance(m, nn.ReLU)]
    candidates = candidates or [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    if not candidates:
        raise ValidationError(
            f"cannot choose a default {kind} layer for {type(model).__name__}: it has no ReLU or Conv2d; "
            "pass layer='<dotted module name>'"
        )
    return candidates[-1]


@contextlib.contextmanager
def capture_activations(model: nn.Module, names: Sequence[str]) -> Iterator[dict[str, torch.Tensor]]:
    """Record the outputs of the named layers during forward passes inside the ``with`` block.

    The dictionary maps each name to the output of its most recent call.  Hooks are removed
    when the block exits, also when it raises.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Linear(2, 3), nn.ReLU())
    >>> with capture_activations(net, ["0"]) as acts:
    ...     _ = net(torch.zeros(1, 2))
    >>> acts["0"].shape
    torch.Size([1, 3])
    """
    store: dict[str, torch.Tensor] = {}
    handles = []
    try:
        for name in names:
            layer = get_layer(model, name)

            def hook(_module, _inputs, output, name=name):
                store[name] = output

            handles.append(layer.register_forward_hook(hook))
        yield store
    finally:
        for handle in handles:
            handle.remove()
