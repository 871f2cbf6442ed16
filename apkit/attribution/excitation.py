"""Excitation Backprop (Zhang et al. 2016; METHOD §6.2): the marginal winning probability at a layer.

A top-down probability starts as the one-hot target at the logits (not multiplied by the logit)
and is passed down through every weighted layer with the positive weights only::

    out+_j = sum_i x_i w+_ij                  (no bias)
    P_i    = x_i sum_j w+_ij P_j / out+_j     (0 where out+_j <= 0)

Average pooling and residual additions pass it in proportion to their inputs, max-pooling to
the arg-max, and BatchNorm is folded into the preceding layer (so a probability stays a
probability).  Activations (ReLU6, Hardswish, SiLU, ...) pass it unchanged and a gate
``x * sigmoid(...)`` sends it all to ``x`` (see :mod:`apkit.attribution._graph`); with
activations that let negative values through, "probabilities" may then be negative.

Without ``layer``, the layer is the model's default (:func:`apkit.models.default_layer`, chosen
on the images of each call for a model not built by apkit); a layer that outputs no
``(N, K, h, w)`` map is refused with an error naming one that does.  The map is the
probability at the chosen layer summed over channels; the evaluation map clamps it at 0 and
upsamples it bilinearly, as the paper.

``contrastive=True`` gives contrastive EB: at the top layer the probability of the "dual" unit
(the target's weights negated) is subtracted before going further down, which equals the
difference of the two maps at the chosen layer.
"""

from __future__ import annotations

import torch

from apkit.attribution import postprocess
from apkit.attribution._graph import RuleMethod, Rules, positive_inverse


class ExcitationRules(Rules):
    """Rules of (contrastive) Excitation Backprop."""

    def __init__(self, *, contrastive: bool = False):
        self.contrastive = bool(contrastive)

    def start(self, logits, pairs):
        return torch.nn.functional.one_hot(pairs[:, 1], logits.shape[1]).to(logits.dtype)

    def linear(self, layer, x, images, relevance):
        shape = (len(relevance), *x.shape[1:])
        out = self._excite(layer, x, images, relevance, positive_weight=layer.weight.clamp(min=0), shape=shape)
        if self.contrastive and layer.top:
            out = out - self._excite(layer, x, images, relevance,
                                     positive_weight=(-layer.weight).clamp(min=0), shape=shape)
        return out

    @staticmethod
    def _excite(layer, x, images, relevance, *, positive_weight, shape):
        z = layer.forward(x, positive_weight).clamp_(min=0)  # units that are not excited pass nothing
        return layer.transpose(relevance * positive_inverse(z)[images], positive_weight, shape).mul_(x[images])


class ExcitationBackprop(RuleMethod):
    """Excitation Backprop at a named layer (default: the model's attribution layer).

    ``attribute`` returns the winning probability summed over channels, ``(M, 1, h, w)``;
    ``heatmap`` clamps it at 0 and upsamples it to the input size.  Option: ``contrastive``.

    Examples
    --------
    >>> from apkit import models
    >>> net = models.create("vgg_small", num_classes=8)
    >>> p = ExcitationBackprop(net).attribute(torch.rand(1, 3, 64, 64), torch.tensor([4]))
    >>> p.shape, round(float(p.sum()), 4)  # the winning probability sums to one
    (torch.Size([1, 1, 8, 8]), 1.0)
    """

    name = "excitation"
    is_layer_method = True

    def _rules(self, *, contrastive: bool = False) -> Rules:
        return ExcitationRules(contrastive=contrastive)

    def _attribute(self, inputs, pairs, **options):
        relevance, logits = super()._attribute(inputs, pairs, **options)
        return relevance.sum(1, keepdim=True), logits

    def _to_heatmap(self, attributions, logits, size):
        maps = postprocess.positive_part(postprocess.sum_channels(attributions))
        return postprocess.to_input_resolution(maps, size)
