"""Layer-wise Relevance Propagation with the alpha=1, beta=0 rule (Bach et al. 2015; METHOD §6.3).

Relevance starts as the target logit ``z_c`` and is sent back layer by layer, conserving its sum:

* convolution / linear layers (BatchNorm folded in), the z+ rule for inputs of both signs::

      z_j  = sum_i x+_i w+_ij + x-_i w-_ij           (no bias)
      R_i  = x+_i sum_j w+_ij R_j / z_j + x-_i sum_j w-_ij R_j / z_j

  Captum's ``Alpha1_Beta0_Rule`` only clamps the weights, which is wrong for negative inputs;
  this is the rule zennit calls ``ZPlus`` / ``AlphaBeta(1, 0)``;
* the first layer (the one reading the image) uses the z^B rule with the image's bounds
  ``low <= x <= high`` (by default each image's own minimum and maximum, as the paper)::

      z_j = sum_i x_i w_ij - low_i w+_ij - high_i w-_ij
      R_i = x_i sum_j w_ij R_j/z_j - low_i sum_j w+_ij R_j/z_j - high_i sum_j w-_ij R_j/z_j

* max-pooling is winner-take-all; average pooling and residual additions split relevance in
  proportion to the summands (see :mod:`apkit.attribution._graph`);
* activations (ReLU, ReLU6, Hardswish, SiLU, GELU, ...) pass relevance unchanged, and a gate
  ``x * sigmoid(...)`` (squeeze-and-excitation) sends it all to ``x``, none to the gate, so
  MobileNets and EfficientNets are explained as they are.

The sum is conserved exactly in a bias-free network whose units all have ``z_j != 0``.  With
activations that let negative values through (Hardswish, SiLU, a linear bottleneck), a unit
whose inputs all contribute negatively has ``z_j = 0`` under the z+ rule, and the relevance it
received is dropped (zennit's ``ZPlus`` drops it too); ReLU networks never lose any this way.

The evaluation map sums the input relevance over colour channels and flips its sign when the
target logit is negative (the z+ rule keeps the logit's sign).  Unlike the reference code, the
relevance of an input with both signs is not doubled (one denominator for both terms) and
BatchNorm is folded with its true variance.
"""

from __future__ import annotations

import torch

from apkit.attribution import postprocess
from apkit.attribution._graph import LinearLayer, RuleMethod, Rules, positive_inverse, safe_inverse
from apkit.core.errors import ValidationError
from apkit.core.validation import check_choice

FIRST_LAYER_RULES = ("zbox", "same")


def _bounds(bounds, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Lowest and highest possible input values, shaped like ``x``."""
    if bounds is None:  # each image's own range, as the paper
        low = x.amin(dim=tuple(range(1, x.dim())), keepdim=True)
        high = x.amax(dim=tuple(range(1, x.dim())), keepdim=True)
    else:
        try:
            low, high = (torch.as_tensor(b, dtype=x.dtype, device=x.device) for b in bounds)
            low, high = low.expand_as(x), high.expand_as(x)
        except (TypeError, ValueError, RuntimeError) as exc:
            raise ValidationError(
                "bounds must be None or a pair (low, high) of numbers or tensors broadcastable to the "
                f"input, e.g. per-channel tensors of shape (3, 1, 1); got {bounds!r}"
            ) from exc
    return low.expand_as(x), high.expand_as(x)


def zbox(layer: LinearLayer, x: torch.Tensor, images: torch.Tensor, relevance: torch.Tensor, *,
         bounds=None) -> torch.Tensor:
    """The z^B rule for the layer reading the image (shared by LRP and RAP)."""
    low, high = _bounds(bounds, x)
    w = layer.weight
    wp, wn = w.clamp(min=0), w.clamp(max=0)
    z = layer.forward(x, w) - layer.forward(low, wp) - layer.forward(high, wn)
    s = relevance * safe_inverse(z)[images]
    shape = (len(relevance), *x.shape[1:])
    to_x, to_low, to_high = layer.transposes(s, (w, wp, wn), shape)
    return x[images] * to_x - low[images] * to_low - high[images] * to_high


class LRPRules(Rules):
    """Rules of LRP alpha=1, beta=0 (z+ rule, z^B first layer)."""

    def __init__(self, *, bounds=None, first_layer: str = "zbox"):
        self.bounds = bounds
        self.first_layer = check_choice(first_layer, "first_layer", FIRST_LAYER_RULES)

    def start(self, logits, pairs):
        relevance = torch.zeros(len(pairs), logits.shape[1], dtype=logits.dtype, device=logits.device)
        relevance[torch.arange(len(pairs), device=logits.device), pairs[:, 1]] = logits[pairs[:, 0], pairs[:, 1]]
        return relevance

    def linear(self, layer, x, images, relevance):
        if layer.first and self.first_layer == "zbox":
            return zbox(layer, x, images, relevance, bounds=self.bounds)
        w = layer.weight
        wp, wn = w.clamp(min=0), w.clamp(max=0)
        shape = (len(relevance), *x.shape[1:])
        # After a ReLU (known from the graph, else checked) there is no x- term: skip its two passes.
        negative = not layer.nonnegative and bool(x.amin() < 0)
        xp = x.clamp(min=0) if negative else x
        z = layer.forward(xp, wp)
        if negative:
            xn = x.clamp(max=0)
            z += layer.forward(xn, wn)
        s = relevance * positive_inverse(z)[images]  # z >= 0: a sum of products of equal signs
        if not negative:
            return layer.transpose(s, wp, shape).mul_(xp[images])  # in place: pair-sized tensors are the big ones
        to_positive, to_negative = layer.transposes(s, (wp, wn), shape)
        return (to_positive * xp[images]).addcmul_(to_negative, xn[images])


class LRP(RuleMethod):
    """LRP alpha=1, beta=0 with a z^B first layer, to the input (or to a named layer).

    ``attribute`` returns the relevance ``(M, C, H, W)`` (its sum is the target logit for a
    bias-free network); ``heatmap`` sums it over channels and flips it for a negative logit.

    Options: ``bounds`` (``None`` = each image's min/max, or ``(low, high)``), ``first_layer``
    (``"zbox"`` or ``"same"`` to use the z+ rule there too).

    Examples
    --------
    >>> from apkit import models
    >>> net = models.create("vgg_small", num_classes=8)
    >>> LRP(net).attribute(torch.randn(1, 3, 64, 64), torch.tensor([2])).shape
    torch.Size([1, 3, 64, 64])
    """

    name = "lrp"
    default_batch_size = 16  # relevance of every pair is input-sized

    def _rules(self, *, bounds=None, first_layer: str = "zbox") -> Rules:
        return LRPRules(bounds=bounds, first_layer=first_layer)

    def _to_heatmap(self, attributions, logits, size):
        maps = postprocess.flip_negative(postprocess.sum_channels(attributions), logits)
        return postprocess.to_input_resolution(maps, size)
