"""Grad-CAM (Selvaraju et al. 2017) at a named layer, batched over (image, class) pairs.

For a layer output A (K channels) and target logit z_c:

    alpha_k = reduce_{h,w} dz_c/dA_k      ("mean" as in Captum's LayerGradCam, "sum" as in the paper)
    map     = ReLU( sum_k alpha_k A_k )

The two reductions differ by the factor h*w > 0, so every normalised map (and every metric or
matching loss apkit computes from it) is the same; ``reduce="mean"`` is the default because it
equals Captum's ``LayerGradCam(..., relu_attributions=True)`` value for value.

All pairs of a batch share one forward pass: the gradients of many logits of one image are one
batched vector-Jacobian product (``autograd.grad(..., is_grads_batched=True)``) from the logits
back to the layer only.  With ``create_graph=True`` the maps are differentiable (second order),
which is what an attribution-matching training loss needs.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

from apkit._validation import check_choice, check_tensor
from apkit.attribution.base import (
    Method,
    check_batch_size,
    check_classes,
    check_inputs,
    check_model,
    chunks,
    frozen,
    gather_chunks,
)
from apkit.attribution.targets import as_pairs
from apkit.errors import ValidationError
from apkit.models import default_layer, get_layer

REDUCTIONS = ("mean", "sum")


@contextlib.contextmanager
def layer_output(model: nn.Module, layer: str) -> Iterator[dict[str, torch.Tensor]]:
    """Record the output of ``layer`` (its last call) during the forward passes inside the block.

    When the output does not require a gradient (frozen model, inputs without grad) it is
    replaced by a detached leaf that does, so gradients with respect to it always exist; when it
    does, it is left in the graph so that second-order terms reach the parameters.  The hook is
    removed when the block exits, also when it raises.
    """
    store: dict[str, torch.Tensor] = {}

    def hook(_module, _inputs, output):
        if not isinstance(output, torch.Tensor) or output.dim() != 4:
            shape = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
            raise ValidationError(
                f"layer {layer!r} must output a (N, K, h, w) feature map for Grad-CAM, got {shape}"
            )
        if not output.requires_grad:
            output = output.detach().requires_grad_()
        store["output"] = output
        return output

    handle = get_layer(model, layer).register_forward_hook(hook)
    try:
        yield store
    finally:
        handle.remove()


def _slots(images: torch.Tensor, num_images: int) -> torch.Tensor:
    """Rank of each pair among the pairs of its image (0, 1, ... per image)."""
    order = torch.argsort(images, stable=True)
    counts = torch.bincount(images, minlength=num_images)
    starts = torch.cumsum(counts, 0) - counts
    slots = torch.empty_like(images)
    slots[order] = torch.arange(len(images), device=images.device) - starts[images[order]]
    return slots


def grad_cam_from(
    activation: torch.Tensor,
    logits: torch.Tensor,
    target,
    *,
    create_graph: bool = False,
    retain_graph: bool | None = None,
    reduce: str = "mean",
    relu: bool = True,
) -> torch.Tensor:
    """Grad-CAM maps from a forward pass already done: the layer's output and the logits.

    Use it when the logits are needed for something else too (a training loss), so the model is
    run once.

    Parameters
    ----------
    activation : Tensor (N, K, h, w)
        The layer output, part of the graph that produced ``logits``.
    logits : Tensor (N, C)
    target : int, LongTensor (N,) or (M, 2)
        Classes to explain (see :func:`apkit.attribution.targets.as_pairs`).
    create_graph : bool
        Keep the graph of the maps (second-order gradients), for training losses.
    retain_graph : bool, optional
        Keep the forward graph after the gradient (defaults to ``create_graph``); pass ``True``
        to back-propagate through ``logits`` afterwards.
    reduce : {"mean", "sum"}
        Spatial reduction of the gradients into channel weights ("sum" is the paper's alpha).
    relu : bool
        Apply the final ReLU.

    Returns
    -------
    Tensor (M, h, w)

    Examples
    --------
    >>> from torch import nn
    >>> conv, head = nn.Conv2d(3, 4, 3), nn.Linear(4, 2)
    >>> act = conv(torch.randn(2, 3, 6, 6))
    >>> logits = head(act.mean((2, 3)))
    >>> grad_cam_from(act, logits, torch.tensor([[0, 1], [1, 0], [1, 1]])).shape
    torch.Size([3, 4, 4])
    """
    check_tensor(activation, "activation", ndim=4)
    check_tensor(logits, "logits", ndim=2)
    check_choice(reduce, "reduce", REDUCTIONS)
    if not activation.requires_grad:
        raise ValidationError("activation must be part of the graph that produced logits (requires_grad)")
    num_images, num_classes = logits.shape
    pairs = as_pairs(target, num_images, device=logits.device)
    check_classes(pairs, num_classes)
    images, classes = pairs[:, 0], pairs[:, 1]
    slots = _slots(images, num_images)
    width = int(slots.max()) + 1 if len(slots) else 1
    # One one-hot cotangent per "slot": slot s holds the s-th class of every image, so one batched
    # vector-Jacobian product gives the gradients of all pairs.
    cotangents = torch.zeros(width, num_images, num_classes, dtype=logits.dtype, device=logits.device)
    cotangents[slots, images, classes] = 1.0
    retain = create_graph if retain_graph is None else retain_graph
    with torch.enable_grad():
        if width == 1:
            (grads,) = torch.autograd.grad(
                logits, activation, cotangents[0], create_graph=create_graph, retain_graph=retain
            )
            grads = grads.unsqueeze(0)
        else:
            (grads,) = torch.autograd.grad(
                logits, activation, cotangents, create_graph=create_graph, retain_graph=retain,
                is_grads_batched=True,
            )
    grads = grads[slots, images]
    weights = grads.sum((2, 3)) if reduce == "sum" else grads.mean((2, 3))
    maps = torch.einsum("mk,mkhw->mhw", weights, activation[images])
    if relu:
        maps = torch.relu(maps)
    return maps if create_graph else maps.detach()


def grad_cam(
    model: nn.Module,
    inputs: torch.Tensor,
    target,
    layer: str | None = None,
    *,
    create_graph: bool = False,
    reduce: str = "mean",
    relu: bool = True,
    batch_size: int | None = None,
) -> torch.Tensor:
    """Grad-CAM maps at layer resolution, one per (image, class) pair, optionally differentiable.

    The model runs in its current mode (a student being trained stays in train mode); use
    :class:`GradCAM` or :func:`apkit.explain` for the eval-mode maps the paper evaluates.

    Parameters
    ----------
    model : torch.nn.Module
    inputs : Tensor (N, C, H, W)
    target : int, LongTensor (N,) or (M, 2)
        One class per image or (image_index, class_index) pairs.
    layer : str, optional
        Dotted module name; defaults to the model's attribution layer.
    create_graph : bool
        Differentiable maps (for a training loss); values are identical either way.
    reduce : {"mean", "sum"}
        "mean" equals Captum's LayerGradCam; "sum" is the paper's alpha (maps times h*w).
    relu : bool
        Apply the final ReLU.
    batch_size : int, optional
        At most this many pairs per forward pass.

    Returns
    -------
    Tensor (M, h, w)

    Examples
    --------
    >>> from apkit import models
    >>> net = models.create("vgg_small", num_classes=8).eval()
    >>> maps = grad_cam(net, torch.randn(2, 3, 64, 64), torch.tensor([[0, 1], [0, 5], [1, 2]]))
    >>> maps.shape, bool((maps >= 0).all())
    (torch.Size([3, 8, 8]), True)
    """
    check_model(model)
    inputs = check_inputs(inputs)
    check_choice(reduce, "reduce", REDUCTIONS)
    batch_size = check_batch_size(batch_size)
    layer = default_layer(model, "attribution") if layer is None else layer
    get_layer(model, layer)
    pairs = as_pairs(target, inputs.shape[0], device=inputs.device)
    pieces = []
    with torch.enable_grad():
        for positions, images, local in chunks(pairs, batch_size):
            with layer_output(model, layer) as store:
                logits = model(inputs[images])
            if "output" not in store:
                raise ValidationError(f"layer {layer!r} was not called in the model's forward pass")
            maps = grad_cam_from(store["output"], logits, local, create_graph=create_graph, reduce=reduce, relu=relu)
            pieces.append((positions, maps))
    return gather_chunks(pieces, len(pairs))


class GradCAM(Method):
    """Grad-CAM at a named layer (default: the model's attribution layer).

    ``attribute`` returns ``(M, 1, h, w)`` layer maps like Captum's ``LayerGradCam`` (with
    ``relu_attributions=True`` by default, as the paper); ``heatmap`` upsamples them bilinearly to
    the input size.

    Examples
    --------
    >>> from apkit import models
    >>> net = models.create("vgg_small", num_classes=8)
    >>> GradCAM(net).heatmap(torch.randn(2, 3, 64, 64), torch.tensor([1, 3])).shape
    torch.Size([2, 64, 64])
    """

    name = "gradcam"
    is_layer_method = True

    def _attribute(self, inputs, pairs, *, reduce: str = "mean", relu_attributions: bool = True):
        check_choice(reduce, "reduce", REDUCTIONS)
        # Only d logit / d layer is needed: no graph below the layer (see layer_output).
        with torch.enable_grad(), frozen(self.model), layer_output(self.model, self.layer) as store:
            logits = self.model(inputs.detach())
        if "output" not in store:
            raise ValidationError(f"layer {self.layer!r} was not called in the model's forward pass")
        maps = grad_cam_from(store["output"], logits, pairs, reduce=reduce, relu=relu_attributions)
        return maps.unsqueeze(1), logits[pairs[:, 0], pairs[:, 1]].detach()
