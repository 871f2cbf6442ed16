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
from apkit.core.registry import Registry
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


def explain(
    model: nn.Module,
    inputs: torch.Tensor,
    target,
    *,
    method: str = "gradcam",
    layer: str | None = None,
    batch_size: int | None = None,
    **options,
) -> torch.Tensor:
    """Attribution maps at input resolution, one per (image, class) pair.

    Parameters
    ----------
    model : torch.nn.Module
        The classifier.  It runs in eval mode and is left exactly as it was.
    inputs : Tensor (N, C, H, W)
    target : int, LongTensor (N,) or LongTensor (M, 2)
        One class per image, or (image_index, class_index) pairs (see
        :func:`apkit.attribution.targets.target_pairs` for the "label"/"own"/"teacher" policies).
    method : str
        A name in :data:`ATTRIBUTION_METHODS` (``apkit list`` shows them), e.g. "gradcam", "excitation",
        "lrp", "rap", "integrated_gradients" or any "captum:<ClassName>".
    layer : str, optional
        Dotted module name for layer methods (default: the model's attribution layer).
    batch_size : int, optional
        At most this many pairs per pass (bounds memory); by default 64, or 16 for LRP and RAP
        whose relevance is input-sized for every pair.
    **options
        Method options, e.g. ``reduce="sum"`` (Grad-CAM), ``contrastive=True`` (EB),
        ``bounds=(low, high)`` (LRP, RAP), ``n_steps=...`` (Captum's IntegratedGradients).

    Returns
    -------
    Tensor (M, H, W)
        The paper's evaluation maps: Grad-CAM and EB upsampled bilinearly (EB clamped at 0), LRP
        and RAP summed over colour channels with the sign flipped for a negative logit (RAP: its
        positive part), Captum methods summed over channels.  An int8 model is explained through
        its fake-quant twin (:func:`apkit.models.quantized.quantized_twin`), once the twin's
        logits are checked against the int8 model's on ``inputs``.
    """
    if is_quantized(model):
        twin = quantized_twin(model)
        check_twin(twin_agreement(model, twin, inputs), name=f"this {type(model).__name__}")
        model = twin.to(inputs.device)
    return ATTRIBUTION_METHODS.get(method)(model, layer).heatmap(inputs, target, batch_size=batch_size, **options)


__all__ = [
    "ATTRIBUTION_METHODS", "LRP", "RAP", "CaptumMethod", "ExcitationBackprop", "GradCAM", "Method", "as_pairs",
    "captum_method", "captum_names", "channel_weights", "class_activation_map", "explain", "grad_cam",
    "grad_cam_from", "target_pairs",
]
