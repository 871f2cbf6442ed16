"""Unstructured pruning: global magnitude pruning of weights with ``torch.nn.utils.prune`` masks.

The paper prunes the weights of **all** convolutions (the first included; not linear layers,
BatchNorm or biases) with one global threshold.  Iteratively, each step removes a fraction
``amount`` of the weights still left (0.2 in the paper), so after ``k`` steps the sparsity is
``1 - (1 - amount) ** k`` (0.9719 after 16 steps); one-shot pruning is a single step.

Masks stay attached while the model is fine-tuned (the forward pass uses ``weight_orig * mask``,
so pruned weights receive no gradient and stay zero) and are made permanent with
:func:`bake_masks` before attribution or export (:func:`apkit.models.save_checkpoint` refuses a
model that still holds masks).

Examples
--------
>>> import torch
>>> from apkit import models
>>> net = models.create("vgg_small", num_classes=8)
>>> for step in range(1, 17):
...     _ = magnitude_prune(net, sparsity=iterative_sparsity(step, 0.2), inplace=True)
>>> round(iterative_sparsity(16, 0.2), 4), round(sparsity_report(net)["weight_sparsity"], 5)
(0.9719, 0.97185)
>>> _ = bake_masks(net)
>>> has_masks(net)
False
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence

import torch
from torch import nn
from torch.nn.utils import prune

from apkit.core.errors import ValidationError
from apkit.core.validation import check_fraction, check_int, check_module

#: Layer types whose weights are pruned by default: every convolution (the paper's choice).
DEFAULT_LAYER_TYPES: tuple[type[nn.Module], ...] = (nn.Conv2d,)
#: The layer kinds a compression setting may name (``layers=["conv", "linear"]``), and their types.
LAYER_KINDS: dict[str, tuple[type[nn.Module], ...]] = {
    "conv": (nn.Conv1d, nn.Conv2d, nn.Conv3d), "linear": (nn.Linear,),
}


def layer_types_of(kinds: Sequence[str]) -> tuple[type[nn.Module], ...]:
    """The layer types of the kinds ``kinds`` ("conv", "linear").

    Examples
    --------
    >>> layer_types_of(["conv", "linear"])[-1].__name__
    'Linear'
    """
    unknown = [k for k in kinds if k not in LAYER_KINDS]
    if unknown or not kinds or isinstance(kinds, str):
        raise ValidationError(f"layers must be a non-empty list of {', '.join(LAYER_KINDS)}, got {kinds!r}")
    return tuple(t for k in dict.fromkeys(kinds) for t in LAYER_KINDS[k])


def iterative_sparsity(step: int, amount: float = 0.2) -> float:
    """Cumulative sparsity after ``step`` steps that each remove ``amount`` of the remaining weights.

    Examples
    --------
    >>> round(iterative_sparsity(16, 0.2), 4)
    0.9719
    """
    check_int(step, "step", minimum=0)
    check_fraction(amount, "amount")
    return 1.0 - (1.0 - amount) ** step


def _check_types(layer_types: Sequence[type]) -> tuple[type, ...]:
    types = tuple(layer_types)
    if not types or not all(isinstance(t, type) and issubclass(t, nn.Module) for t in types):
        raise ValidationError(f"layer_types must be a non-empty sequence of nn.Module classes, got {layer_types!r}")
    return types


def prunable_weights(
    model: nn.Module, layer_types: Sequence[type] = DEFAULT_LAYER_TYPES
) -> list[tuple[str, nn.Module]]:
    """``(name, module)`` of every layer of ``layer_types`` with a ``weight``: what is pruned."""
    types = _check_types(layer_types)
    found = [(name, m) for name, m in model.named_modules()
             if isinstance(m, types) and isinstance(getattr(m, "weight", None), torch.Tensor)]
    if not found:
        names = ", ".join(t.__name__ for t in types)
        raise ValidationError(f"{type(model).__name__} has no {names} layer with weights to prune")
    return found


def has_masks(model: nn.Module) -> bool:
    """True if any layer of ``model`` still carries a ``torch.nn.utils.prune`` mask."""
    return any(isinstance(hook, prune.BasePruningMethod)
               for m in model.modules() for hook in m._forward_pre_hooks.values())


def attach_masks(model: nn.Module, layer_types: Sequence[type] = DEFAULT_LAYER_TYPES) -> nn.Module:
    """Give every prunable weight an all-ones mask (e.g. before loading a state dict with masks)."""
    for _, module in prunable_weights(model, layer_types):
        if not prune.is_pruned(module) or not hasattr(module, "weight_mask"):
            prune.identity(module, "weight")
    return model


def clone_model(model: nn.Module) -> nn.Module:
    """``copy.deepcopy`` that also works while pruning masks are attached.

    A masked layer's ``weight`` is the product ``weight_orig * weight_mask`` recorded by autograd,
    which ``deepcopy`` refuses; it is detached for the copy and recomputed afterwards.
    """
    masked = [m for m in model.modules()
              if any(isinstance(h, prune.BasePruningMethod) for h in m._forward_pre_hooks.values())]
    for module in masked:
        for hook in module._forward_pre_hooks.values():
            if isinstance(hook, prune.BasePruningMethod):
                setattr(module, hook._tensor_name, getattr(module, hook._tensor_name).detach())
    try:
        return copy.deepcopy(model)
    finally:
        for module in masked:
            _refresh(module)


def magnitude_prune(
    model: nn.Module,
    *,
    sparsity: float,
    layer_types: Sequence[type] = DEFAULT_LAYER_TYPES,
    inplace: bool = False,
) -> nn.Module:
    """Global magnitude pruning: zero the smallest ``|w|`` until ``sparsity`` of the weights are zero.

    One threshold over all weights of ``layer_types`` (default: every ``Conv2d``); exactly
    ``floor(sparsity * N)`` of the ``N`` weights end up masked.  Weights masked before stay masked,
    so calling it with growing sparsities gives iterative pruning.

    Parameters
    ----------
    model : torch.nn.Module
        The model to prune (a copy unless ``inplace``).
    sparsity : float
        Target fraction of pruned weights, in [0, 1).
    layer_types : sequence of type
        Layer types whose ``weight`` is pruned.
    inplace : bool
        Prune ``model`` itself (``torch.nn.utils.prune``'s convention) instead of a copy.

    Returns
    -------
    torch.nn.Module
        The model with masks attached (see :func:`bake_masks`).
    """
    check_module(model)
    check_fraction(sparsity, "sparsity")
    target = model if inplace else clone_model(model)
    layers = prunable_weights(target, layer_types)
    total = sum(m.weight.numel() for _, m in layers)
    already = sum(int((m.weight_mask == 0).sum()) for _, m in layers if hasattr(m, "weight_mask"))
    wanted = math.floor(sparsity * total + 1e-9)  # guard against 0.9 * 10 = 8.999...
    if wanted < already:
        raise ValidationError(
            f"the model already has {already / total:.4f} of its weights pruned, more than sparsity={sparsity}; "
            "pass a sparsity of at least the current one"
        )
    # Already-masked weights score -1, below every |w|, so they stay in the pruned set.
    scores = torch.cat([
        _current_weight(m).abs().flatten().masked_fill(m.weight_mask.flatten() == 0, -1.0)
        if hasattr(m, "weight_mask") else _current_weight(m).abs().flatten()
        for _, m in layers
    ])
    keep = torch.ones_like(scores, dtype=torch.bool)
    keep[scores.argsort()[:wanted]] = False
    start = 0
    for _, module in layers:
        mask = keep[start:start + module.weight.numel()].view_as(module.weight).to(module.weight.dtype)
        start += module.weight.numel()
        if hasattr(module, "weight_mask"):  # update the mask in place: one mask per weight, no history
            module.weight_mask.copy_(mask)
            _refresh(module)
        else:
            prune.custom_from_mask(module, "weight", mask)
    return target


def _refresh(module: nn.Module) -> None:
    # Recompute `weight = weight_orig * weight_mask` now rather than at the next forward pass.
    for hook in list(module._forward_pre_hooks.values()):
        if isinstance(hook, prune.BasePruningMethod):
            hook(module, None)


def bake_masks(model: nn.Module) -> nn.Module:
    """Make every pruning mask permanent (``prune.remove``): plain weights with zeros, no hooks.

    Returns ``model`` itself (changed in place, as ``torch.nn.utils.prune.remove`` does).
    """
    for module in model.modules():
        names = [hook._tensor_name for hook in list(module._forward_pre_hooks.values())
                 if isinstance(hook, prune.BasePruningMethod)]
        for name in names:
            prune.remove(module, name)
    return model


def _current_weight(module: nn.Module) -> torch.Tensor:
    # The `weight` of a masked layer is recomputed at each forward; the masked product is current.
    if hasattr(module, "weight_orig") and hasattr(module, "weight_mask"):
        return module.weight_orig.detach() * module.weight_mask
    return module.weight.detach()


def sparsity_report(model: nn.Module, layer_types: Sequence[type] = DEFAULT_LAYER_TYPES) -> dict:
    """Counts of zero weights: of the prunable layers and of all parameters.

    Returns
    -------
    dict
        ``weights`` and ``zero_weights`` of the ``layer_types`` layers and ``weight_sparsity``;
        ``params`` (all parameters), ``nonzero_params`` and ``sparsity`` over all parameters.
        Masked weights count as zero whether or not the masks are baked.
    """
    layers = prunable_weights(model, layer_types)
    weights = sum(m.weight.numel() for _, m in layers)
    zero = sum(int((_current_weight(m) == 0).sum()) for _, m in layers)
    params = 0
    nonzero = 0
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            if name.endswith("_orig"):
                p = p.detach() * getattr(module, name[:-5] + "_mask")
            params += p.numel()
            nonzero += int(p.count_nonzero())
    return {
        "weights": weights, "zero_weights": zero, "weight_sparsity": zero / weights,
        "params": params, "nonzero_params": nonzero, "sparsity": 1.0 - nonzero / params if params else 0.0,
    }
