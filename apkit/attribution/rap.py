"""Relative Attributing Propagation (Nam et al., AAAI 2020), following METHOD §6.4 step by step.

Notation: x+ = max(x, 0), x- = min(x, 0), w+ = max(w, 0), w- = min(w, 0); all divisions are
"safe" (0 where the denominator is 0); no bias unless stated.

(a) The top weighted layer (it receives the one-hot target R, not multiplied by the logit) splits
    the target unit's input into four kinds of contribution, C_pp = x+ w+, C_pn = x+ w-,
    C_np = x- w+, C_nn = x- w-.  The bias b is shared between the positive and the negative side
    in proportion to Pos = sum(C_pp + C_nn) and Neg = sum(C_pn + C_np) and spread over the
    x+w+ (resp. x+w-) contributions in proportion, so that sum_i C_i = z.  Relevance is then the
    *absolute* influence, rescaled to conserve the logit: A_i = |C_i| * z / sum_k |C_k|.
(b) Every other weighted layer (BatchNorm folded in) propagates R+ = max(R, 0) and R- = min(R, 0)
    separately.  For an input u >= 0 (first x+, then |x-|, results added), with
    a_ij = u_i w+_ji, b_ij = u_i |w-_ji|, Za1_j = sum_i a_ij and Za2_j = sum_i b_ij:

        convolution: C_i = sum_j a_ij R+_j/Za1_j + b_ij R+_j/(Za1_j+Za2_j)
                                + b_ij R-_j/Za2_j + b_ij R-_j/(Za1_j+Za2_j)
        linear:      C_i = sum_j a_ij R+_j/Za1_j + b_ij R+_j/(Za1_j+Za2_j)
                                + a_ij R-_j/Za1_j + b_ij R-_j/(Za1_j+Za2_j)

    The terms over-count R, so C is shifted to conserve it: with D = sum_i C_i - sum_j R_j and
    n = #{i : C_i != 0}, every non-zero C_i becomes C_i - D/n.  This uniform shift turns weakly
    contributing units negative: the "relative" separation of positive and negative relevance.
(c) The first layer uses the z^B rule (as LRP); pooling as LRP (winner-take-all max-pool,
    proportional average pooling); ReLU and the other elementwise activations (ReLU6, Hardswish,
    SiLU, ...) and dropout pass relevance unchanged, and a gate ``x * sigmoid(...)`` sends it all
    to ``x`` (see :mod:`apkit.attribution._graph`).

The evaluation map sums the input relevance over colour channels, flips it for a negative target
logit and keeps the positive part, as the paper.

Where this differs from the reference code (which only ran VGG, where it makes no difference):
BatchNorm is folded into the preceding layer with its true variance (the reference computes
gamma / sqrt(var**2 + eps) and treats BatchNorm as an identity); the shift of (b) is applied once
to the sum of the x+ and x- branches, so a layer with inputs of both signs still conserves
relevance (every layer of a ReLU network after the first has x- = 0, where both agree); a
residual addition splits relevance in proportion to the absolute value of each summand.
"""

from __future__ import annotations

import torch

from apkit.attribution import postprocess
from apkit.attribution._graph import LinearLayer, RuleMethod, Rules, per_sample_sum, positive_inverse, safe_div
from apkit.attribution.lrp import zbox


def shift(contributions: torch.Tensor, relevance: torch.Tensor) -> torch.Tensor:
    """Step (b)6: subtract the excess relevance uniformly from the non-zero contributions.

    Examples
    --------
    >>> shift(torch.tensor([[3.0, 1.0, 0.0]]), torch.tensor([[2.0]])).tolist()
    [[2.0, 0.0, 0.0]]
    """
    zero = contributions == 0
    count = zero[0].numel() - zero.flatten(1).sum(1).view(-1, *([1] * (contributions.dim() - 1)))
    excess = per_sample_sum(contributions) - per_sample_sum(relevance)
    # Shift every value, then put the zeros back: the same values as shifting the non-zero ones only.
    return (contributions - safe_div(excess, count.to(contributions.dtype))).masked_fill_(zero, 0.0)


class RAPRules(Rules):
    """Rules of Relative Attributing Propagation."""

    def __init__(self, *, bounds=None):
        self.bounds = bounds

    def start(self, logits, pairs):
        return torch.nn.functional.one_hot(pairs[:, 1], logits.shape[1]).to(logits.dtype)

    def linear(self, layer, x, images, relevance):
        if layer.top:
            return self._top(layer, x, images, relevance)
        if layer.first:
            return zbox(layer, x, images, relevance, bounds=self.bounds)
        # After a ReLU (known from the graph, else checked) there is no x- branch.
        negative = not layer.nonnegative and bool(x.amin() < 0)
        contributions = self._branch(layer, x.clamp(min=0) if negative else x, images, relevance)
        if negative:
            contributions += self._branch(layer, -x.clamp(max=0), images, relevance)
        return shift(contributions, relevance)

    @staticmethod
    def _top(layer: LinearLayer, x, images, relevance):
        """Step (a): absolute influence of each input on the target unit, conserving the logit."""
        w = layer.weight
        wp, wn = w.clamp(min=0), w.clamp(max=0)
        shape = (len(relevance), *x.shape[1:])
        xp, xn = x.clamp(min=0)[images], x.clamp(max=0)[images]
        tp, tn = layer.transpose(relevance, wp, shape), layer.transpose(relevance, wn, shape)
        c_pp, c_pn, c_np, c_nn = xp * tp, xp * tn, xn * tp, xn * tn
        positive, negative = per_sample_sum(c_pp + c_nn), per_sample_sum(c_pn + c_np)
        bias = layer.bias_of(relevance)
        bias_positive = bias * safe_div(positive, positive + negative)
        bias_negative = bias * safe_div(negative, positive + negative)
        c = (c_pp + c_pn + c_np + c_nn + c_pp * safe_div(bias_positive, per_sample_sum(c_pp))
             + c_pn * safe_div(bias_negative, per_sample_sum(c_pn)))
        return c.abs() * safe_div(per_sample_sum(c), per_sample_sum(c.abs()))

    @staticmethod
    def _branch(layer: LinearLayer, u, images, relevance):
        """Step (b)1-5 for one non-negative input branch ``u`` (x+ or |x-|)."""
        wp, wn = layer.weight.clamp(min=0), -layer.weight.clamp(max=0)  # w+ and |w-|
        za1, za2 = layer.forward(u, wp), layer.forward(u, wn)  # both >= 0: sums of non-negative products
        s_b = relevance * positive_inverse(za1 + za2)[images]  # b R+/(Za1+Za2) + b R-/(Za1+Za2)
        if isinstance(layer.module, torch.nn.Conv2d):
            s_a = relevance.clamp(min=0).mul_(positive_inverse(za1)[images])
            s_b += relevance.clamp(max=0).mul_(positive_inverse(za2)[images])
        else:
            s_a = relevance * positive_inverse(za1)[images]
        shape = (len(relevance), *u.shape[1:])
        out = layer.transpose(s_a, wp, shape)
        del s_a  # pair-sized tensors are the big ones: keep as few alive as possible
        out += layer.transpose(s_b, wn, shape)
        return out.mul_(u[images])

    def add(self, terms, total, relevance):
        # Relevance here has both signs; splitting by |x_k| keeps each share bounded and its sign.
        magnitudes = [term.abs() for term in terms]
        share = safe_div(relevance, sum(magnitudes))
        return [m * share for m in magnitudes]


class RAP(RuleMethod):
    """Relative Attributing Propagation to the input (or to a named layer).

    ``attribute`` returns the signed relevance ``(M, C, H, W)``; ``heatmap`` sums it over channels,
    flips it for a negative logit and keeps the positive part.  Option: ``bounds`` of the z^B
    first layer (as :class:`apkit.attribution.lrp.LRP`).

    Examples
    --------
    >>> from apkit import models
    >>> net = models.create("vgg_small", num_classes=8)
    >>> RAP(net).heatmap(torch.randn(1, 3, 64, 64), torch.tensor([0])).shape
    torch.Size([1, 64, 64])
    """

    name = "rap"
    default_batch_size = 16  # relevance of every pair is input-sized

    def _rules(self, *, bounds=None) -> Rules:
        return RAPRules(bounds=bounds)

    def _to_heatmap(self, attributions, logits, size):
        maps = postprocess.flip_negative(postprocess.sum_channels(attributions), logits)
        return postprocess.to_input_resolution(postprocess.positive_part(maps), size)
