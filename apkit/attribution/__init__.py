"""Attribution maps: Grad-CAM, Excitation Backprop, LRP alpha=1 beta=0, RAP, and any Captum method.

Every method is registered in :data:`ATTRIBUTION_METHODS` and reached by name through :func:`explain`, which
returns the maps the paper evaluates, ``(M, H, W)`` at input resolution, for many (image, class)
pairs in batched calls.  The classes follow Captum's vocabulary (``Method(model, layer=...)``,
``.attribute(inputs, target=...)``); :func:`grad_cam` is the differentiable Grad-CAM used by
training losses.

Examples
--------
>>> import torch, apkit
>>> from apkit import models
>>> net = models.create("vgg_small", num_classes=8)
>>> images = torch.randn(2, 3, 64, 64)
>>> pairs = torch.tensor([[0, 1], [0, 4], [1, 2]])      # (image_index, class_index)
>>> apkit.explain(net, images, pairs, method="lrp").shape
torch.Size([3, 64, 64])
"""

from __future__ import annotations

import torch
from torch import nn

from apkit.attribution.base import Method
from apkit.attribution.captum_methods import SHORT_NAMES, CaptumMethod, captum_method, captum_names
from apkit.attribution.excitation import ExcitationBackprop
from apkit.attribution.gradcam import GradCAM, channel_weights, class_activation_map, grad_cam, grad_cam_from
from apkit.attribution.lrp import LRP
from apkit.attribution.rap import RAP
from apkit.attribution.targets import as_pairs, target_pairs
from apkit.core.errors import ValidationError
from apkit.core.modules import evaluating
from apkit.core.registry import Registry
from apkit.core.validation import check_tensor
from apkit.models.quantized import check_twin, is_quantized, quantized_twin, twin_agreement

ATTRIBUTION_METHODS: Registry = Registry("attribution method")
ATTRIBUTION_METHODS.register("gradcam", GradCAM,
                             help="Grad-CAM at a layer (the paper's first method), bilinear upsampling")
ATTRIBUTION_METHODS.register(
    "excitation", ExcitationBackprop,
    help="Excitation Backprop: marginal winning probability at a layer (contrastive=True option)")
ATTRIBUTION_METHODS.register("lrp", LRP,
                             help="LRP alpha=1 beta=0 (z+ rule, z^B first layer, BatchNorm folded) to the input")
ATTRIBUTION_METHODS.register("rap", RAP,
                             help="Relative Attributing Propagation (Nam et al. 2020) to the input, positive part")
for _short, _name in SHORT_NAMES.items():
    ATTRIBUTION_METHODS.register(_short, captum_method(_name), help=f"Captum's {_name} (same as captum:{_name})")
for _name in captum_names():
    ATTRIBUTION_METHODS.register(f"captum:{_name}", captum_method(_name), help=f"Captum's {_name}")


def _layer_name(model: nn.Module, layer: str | nn.Module | None) -> str | None:
    """A layer given as a module becomes its dotted name in ``model``."""
    if layer is None or isinstance(layer, str):
        return layer
    if not isinstance(layer, nn.Module):
        raise ValidationError(f"layer must be a dotted module name or a module of the model, "
                              f"got {type(layer).__name__}")
    name = next((n for n, m in model.named_modules() if m is layer), None)
    if not name:
        raise ValidationError(f"layer {type(layer).__name__} is not a submodule of {type(model).__name__}; pass one of "
                              "its own modules (e.g. model.layer4) or its dotted name")
    return name


def _top1(model: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    """The model's highest-scoring class per image (one eval-mode, no-grad pass; the model's modes are kept)."""
    with torch.no_grad(), evaluating(model):
        logits = model(inputs)
    return logits.argmax(dim=1)


def explain(
    model: nn.Module,
    inputs: torch.Tensor,
    target=None,
    *,
    method: str = "gradcam",
    layer: str | nn.Module | None = None,
    batch_size: int | None = None,
    **options,
) -> torch.Tensor:
    """Attribution maps at input resolution, one per (image, class) pair.

    Parameters
    ----------
    model : torch.nn.Module
        The classifier.  It runs in eval mode and is left exactly as it was.
    inputs : Tensor (N, C, H, W) or (C, H, W)
        A batch, or a single image.
    target : int, LongTensor (N,) or LongTensor (M, 2), optional
        One class per image, or (image_index, class_index) pairs (see
        :func:`apkit.attribution.targets.target_pairs` for the "label"/"own"/"teacher" policies).
        Default: the model's top-1 class of each image.  For a single image, a list of classes
        gives one map per class.
    method : str
        A name in :data:`ATTRIBUTION_METHODS` (``apkit list`` shows them), e.g. "gradcam", "excitation",
        "lrp", "rap", "integrated_gradients" or any "captum:<ClassName>".
    layer : str or torch.nn.Module, optional
        Layer methods: the layer, by dotted name (``"layer4"``) or as a module of the model
        (``model.layer4``); default the model's attribution layer.
    batch_size : int, optional
        At most this many pairs per pass (bounds memory); by default 64, or 16 for LRP and RAP
        whose relevance is input-sized for every pair.
    **options
        Method options, e.g. ``reduce="sum"`` (Grad-CAM), ``contrastive=True`` (EB),
        ``bounds=(low, high)`` (LRP, RAP), ``n_steps=...`` (Captum's IntegratedGradients).

    Returns
    -------
    Tensor (M, H, W), or (H, W)
        The paper's evaluation maps: Grad-CAM and EB upsampled bilinearly (EB clamped at 0), LRP
        and RAP summed over colour channels with the sign flipped for a negative logit (RAP: its
        positive part), Captum methods summed over channels.  A single image with one target
        (or the default) gives one ``(H, W)`` map.  An int8 model is explained through its
        fake-quant twin (:func:`apkit.models.quantized.quantized_twin`), once the twin's logits are
        checked against the int8 model's on ``inputs``.

    Examples
    --------
    >>> from torchvision.models import resnet18
    >>> net = resnet18(weights=None, num_classes=3)
    >>> image = torch.randn(3, 64, 64)
    >>> explain(net, image, layer=net.layer3).shape  # the top-1 class, a (C, H, W) image
    torch.Size([64, 64])
    >>> explain(net, image, [0, 2]).shape  # two classes of one image
    torch.Size([2, 64, 64])
    """
    single = isinstance(inputs, torch.Tensor) and inputs.dim() == 3
    batch = check_tensor(inputs[None] if single else inputs, "inputs", ndim=4, floating=True)
    if is_quantized(model):
        twin = quantized_twin(model)
        check_twin(twin_agreement(model, twin, batch), name=f"this {type(model).__name__}")
        model = twin.to(batch.device)
    attributor = ATTRIBUTION_METHODS.get(method)(model, _layer_name(model, layer))
    per_class = single and target is not None and not isinstance(target, int) and torch.as_tensor(target).dim() == 1
    if target is None:
        target = _top1(model, batch)
    if per_class:  # several classes of the one image: (image 0, class) pairs
        classes = torch.as_tensor(target).reshape(-1, 1)
        target = torch.cat([torch.zeros_like(classes), classes], dim=1)
    maps = attributor.heatmap(batch, target, batch_size=batch_size, **options)
    return maps[0] if single and not per_class and maps.shape[0] == 1 else maps


__all__ = [
    "ATTRIBUTION_METHODS", "LRP", "RAP", "CaptumMethod", "ExcitationBackprop", "GradCAM", "Method", "as_pairs",
    "captum_method", "captum_names", "channel_weights", "class_activation_map", "explain", "grad_cam",
    "grad_cam_from", "target_pairs",
]
