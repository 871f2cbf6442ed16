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

Without ``layer``, the layer is the model's default (:func:`apkit.models.default_layer`): the
one a model built by apkit names, or for any other CNN the probe's choice on the images being
explained.
"""

from __future__ import annotations

import torch
from torch import nn

from apkit.attribution.base import (
    Method,
    check_batch_size,
    check_classes,
    check_inputs,
    check_layer_output,
    chunks,
    frozen,
    gather_chunks,
)
from apkit.attribution.targets import as_pairs
from apkit.core.errors import ValidationError
from apkit.core.modules import called_output, capture_outputs, feature_map, get_layer
from apkit.core.validation import check_choice, check_module, check_tensor
from apkit.models import default_layer

REDUCTIONS = ("mean", "sum")


def _as_grad_leaf(layer: str, *, strict: bool = True):
    """A capture ``replace`` that hands on a feature map that gradients can reach.

    When the output does not require a gradient (frozen model, inputs without grad) it becomes a
    detached leaf that does; when it does, it stays in the graph so that second-order terms
    reach the parameters.  An output that is no ``(N, K, h, w)`` map raises, or with
    ``strict=False`` is handed on unchanged for the caller to refuse after the forward pass.
    """

    def replace(_name, output):
        if strict:
            output = feature_map(output, layer, "Grad-CAM")
        elif not isinstance(output, torch.Tensor) or output.dim() != 4:
            return output
        return output if output.requires_grad else output.detach().requires_grad_()

    return replace


def _slots(images: torch.Tensor, num_images: int) -> torch.Tensor:
    """Rank of each pair among the pairs of its image (0, 1, ... per image)."""
    order = torch.argsort(images, stable=True)
    counts = torch.bincount(images, minlength=num_images)
    starts = torch.cumsum(counts, 0) - counts
    slots = torch.empty_like(images)
    slots[order] = torch.arange(len(images), device=images.device) - starts[images[order]]
    return slots


def channel_weights(activation: torch.Tensor, logits: torch.Tensor, target, *, reduce: str = "mean",
                    create_graph: bool = False, retain_graph: bool | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Grad-CAM's channel weights of each (image, class) pair: ``alpha_k = reduce_hw dz_c/dA_k``.

    Parameters are those of :func:`grad_cam_from`.  Returns ``(weights, images)``: ``(M, K)``
    weights and, per pair, the index of its image in the batch.

    Examples
    --------
    >>> from torch import nn
    >>> conv, head = nn.Conv2d(1, 2, 1, bias=False), nn.Linear(2, 1, bias=False)
    >>> _ = conv.weight.data.fill_(1.0), head.weight.data.copy_(torch.tensor([[1.0, -2.0]]))
    >>> act = conv(torch.ones(1, 1, 2, 2))
    >>> weights, images = channel_weights(act, head(act.sum((2, 3))), 0, reduce="sum")
    >>> weights, images
    (tensor([[ 4., -8.]]), tensor([0]))
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
    return (grads.sum((2, 3)) if reduce == "sum" else grads.mean((2, 3))), images


def class_activation_map(weights: torch.Tensor, activation: torch.Tensor, *, relu: bool = True) -> torch.Tensor:
    """``ReLU(sum_k weights_k A_k)``: ``(M, K)`` weights and ``(M, K, h, w)`` activations -> ``(M, h, w)``.

    Examples
    --------
    >>> class_activation_map(torch.tensor([[1.0, -0.5]]), torch.ones(1, 2, 1, 2))
    tensor([[[0.5000, 0.5000]]])
    """
    maps = torch.einsum("mk,mkhw->mhw", weights, activation)
    return torch.relu(maps) if relu else maps


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
    weights, images = channel_weights(activation, logits, target, create_graph=create_graph,
                                      retain_graph=retain_graph, reduce=reduce)
    maps = class_activation_map(weights, activation[images], relu=relu)
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
        Dotted module name; defaults to the model's attribution layer (for a model not built by
        apkit, chosen by :func:`apkit.models.default_layer` on ``inputs``).
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
    check_module(model)
    inputs = check_inputs(inputs)
    check_choice(reduce, "reduce", REDUCTIONS)
    batch_size = check_batch_size(batch_size)
    layer = default_layer(model, "attribution", inputs[:1]) if layer is None else layer
    get_layer(model, layer)
    pairs = as_pairs(target, inputs.shape[0], device=inputs.device)
    pieces = []
    with torch.enable_grad():
        for positions, images, local in chunks(pairs, batch_size):
            with capture_outputs(model, [layer], replace=_as_grad_leaf(layer)) as store:
                logits = model(inputs[images])
            maps = grad_cam_from(called_output(store, layer), logits, local, create_graph=create_graph, reduce=reduce,
                                 relu=relu)
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
        # Only d logit / d layer is needed: no graph below the layer (see _as_grad_leaf).
        with torch.enable_grad(), frozen(self.model), \
                capture_outputs(self.model, [self.layer], replace=_as_grad_leaf(self.layer, strict=False)) as store:
            logits = self.model(inputs.detach())
        activation = called_output(store, self.layer)
        check_layer_output(self.model, self.layer, getattr(activation, "shape", None), inputs)
        maps = grad_cam_from(activation, logits, pairs, reduce=reduce, relu=relu_attributions)
        return maps.unsqueeze(1), logits[pairs[:, 0], pairs[:, 1]].detach()
