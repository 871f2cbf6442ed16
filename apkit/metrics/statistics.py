"""Confidence intervals for apkit's comparisons: Student's t over a few seeds, a paired bootstrap over images.

* :func:`t_interval` -- the mean of a few independent values (e.g. one per training seed) and the
  half-width of its two-sided Student's t interval, ``t_{(1+c)/2, n-1} * s / sqrt(n)``;
* :func:`student_t_quantile` -- the t quantile itself, from the regularized incomplete beta
  function (no SciPy needed; the tests hold it against SciPy and the closed forms for 1 and 2
  degrees of freedom);
* :func:`paired_bootstrap` -- the percentile interval of a mean over (image, class) pairs,
  resampling *images* (so that the classes of one image move together), all resamples at once as
  a matrix of per-image counts (:func:`bootstrap_counts`); :func:`weighted_average_precision`
  evaluates a ranking metric under the same counts.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from apkit.core.errors import ValidationError
from apkit.core.validation import check_float, check_int
from apkit.metrics.classification import tie_group_ends

__all__ = ["BootstrapInterval", "bootstrap_counts", "paired_bootstrap", "percentile_interval", "student_t_quantile",
           "t_interval", "weighted_average_precision"]


def _incomplete_beta(a: float, b: float, x: float) -> float:
    """The regularized incomplete beta function ``I_x(a, b)`` (Lentz's continued fraction)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    if x > (a + 1.0) / (a + b + 2.0):  # the continued fraction converges fast on this side only
        return 1.0 - _incomplete_beta(b, a, 1.0 - x)
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    fraction = d
    for m in range(1, 500):
        for numerator in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                          -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            fraction *= c * d
        if abs(c * d - 1.0) < 1e-15:
            break
    return math.exp(log_front) * fraction / a


def _t_cdf(t: float, df: float) -> float:
    tail = 0.5 * _incomplete_beta(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t > 0 else tail


def student_t_quantile(p: float, df: float) -> float:
    """The ``p`` quantile of Student's t distribution with ``df`` degrees of freedom.

    Examples
    --------
    >>> round(student_t_quantile(0.975, 2), 6)  # the closed form sqrt(2) * 0.95 / sqrt(1 - 0.95**2)
    4.302653
    >>> round(student_t_quantile(0.975, 1e9), 6)  # the normal quantile
    1.959964
    """
    p = check_float(p, "p", minimum=0.0, maximum=1.0, exclusive_minimum=True, exclusive_maximum=True)
    df = check_float(df, "df", minimum=0.0, exclusive_minimum=True)
    if p < 0.5:
        return -student_t_quantile(1.0 - p, df)
    low, high = 0.0, 1.0
    while _t_cdf(high, df) < p:  # bracket, then bisect: the CDF is monotone
        low, high = high, 2.0 * high
    for _ in range(200):
        middle = 0.5 * (low + high)
        if _t_cdf(middle, df) < p:
            low = middle
        else:
            high = middle
        if high - low <= 1e-13 * max(1.0, high):
            break
    return 0.5 * (low + high)


def t_interval(values: torch.Tensor | Sequence[float], *, confidence: float = 0.95, dim: int = 0
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and the half-width of its two-sided Student's t interval along ``dim``.

    Use it for a few independent repetitions (one value per training seed): the interval is
    ``mean +- t_{(1 + confidence) / 2, n - 1} * std / sqrt(n)`` with the sample standard deviation
    (``n - 1`` in the denominator).  NaN values are left out; fewer than two values give a NaN
    half-width.

    Parameters
    ----------
    values : Tensor or sequence of float
        One value per repetition along ``dim``.
    confidence : float
        Coverage of the interval, in (0, 1).
    dim : int
        The dimension of the repetitions.

    Returns
    -------
    mean, half_width : Tensor
        Float64, ``values`` reduced over ``dim``.

    Examples
    --------
    >>> mean, half = t_interval([1.0, 2.0, 3.0])
    >>> float(mean), round(float(half), 4)  # 4.3027 * 1 / sqrt(3)
    (2.0, 2.4841)
    """
    values = torch.as_tensor(values, dtype=torch.float64)
    check_float(confidence, "confidence", minimum=0.0, maximum=1.0, exclusive_minimum=True, exclusive_maximum=True)
    check_int(dim, "dim")
    if values.dim() == 0:
        raise ValidationError("values must hold one value per repetition along dim, got a scalar")
    valid = ~torch.isnan(values)
    count = valid.sum(dim).double()
    filled = torch.where(valid, values, torch.zeros((), dtype=values.dtype))
    mean = filled.sum(dim) / count
    squares = torch.where(valid, (values - mean.unsqueeze(dim)) ** 2, torch.zeros((), dtype=values.dtype)).sum(dim)
    std = (squares / (count - 1)).sqrt()
    quantile = {int(n): student_t_quantile((1.0 + confidence) / 2.0, max(int(n) - 1, 1))
                for n in count.unique().tolist()}
    quantiles = count.cpu().clone().apply_(lambda n: quantile[int(n)]).to(count.device)
    half = torch.where(count >= 2, quantiles * std / count.sqrt(), torch.full_like(std, math.nan))
    return mean, half


@dataclass(frozen=True)
class BootstrapInterval:
    """An estimate and its bootstrap percentile interval ``[low, high]``."""

    estimate: float
    low: float
    high: float

    def to_dict(self) -> dict[str, float]:
        return {"estimate": self.estimate, "low": self.low, "high": self.high}


def bootstrap_counts(groups: int, *, resamples: int = 1000, seed: int = 0,
                     device: torch.device | str = "cpu") -> torch.Tensor:
    """How often each of ``groups`` units (images) is drawn in each resample: ``(resamples, groups)`` float64.

    Resample ``r`` draws ``groups`` units with replacement from ``torch.Generator().manual_seed(seed)``
    (row ``r`` of ``torch.randint(groups, (resamples, groups))``), so the same seed gives the same
    resamples, whatever is computed from them.

    Examples
    --------
    >>> counts = bootstrap_counts(4, resamples=3, seed=0)
    >>> counts.shape, counts.sum(1).tolist()
    (torch.Size([3, 4]), [4.0, 4.0, 4.0])
    """
    check_int(groups, "groups", minimum=1)
    check_int(resamples, "resamples", minimum=1)
    check_int(seed, "seed", minimum=0)
    draws = torch.randint(groups, (resamples, groups), generator=torch.Generator().manual_seed(seed))
    counts = torch.zeros(resamples, groups, dtype=torch.float64)
    counts.scatter_add_(1, draws, torch.ones(1, dtype=torch.float64).expand(resamples, groups))
    return counts.to(device)


def percentile_interval(statistics: torch.Tensor, *, confidence: float = 0.95) -> tuple[float, float]:
    """The ``(1 - confidence) / 2`` and ``(1 + confidence) / 2`` quantiles of bootstrap statistics (NaN left out)."""
    check_float(confidence, "confidence", minimum=0.0, maximum=1.0, exclusive_minimum=True, exclusive_maximum=True)
    finite = statistics[~torch.isnan(statistics)].double()
    if not len(finite):
        return math.nan, math.nan
    low, high = torch.quantile(finite, torch.tensor([(1 - confidence) / 2, (1 + confidence) / 2], dtype=torch.float64,
                                                     device=finite.device))
    return float(low), float(high)


def paired_bootstrap(values: torch.Tensor, groups: torch.Tensor, *, resamples: int = 1000, confidence: float = 0.95,
                     seed: int = 0) -> BootstrapInterval:
    """The mean of per-pair ``values`` and its percentile interval, resampling the pairs' groups (images).

    Pass the per-pair differences of two models on the same pairs (``a - b``) for a paired
    difference, or a per-pair similarity for its mean.  A resample draws as many images as there
    are, with replacement, and takes every pair of each drawn image as often as it was drawn, so
    the classes of one image move together.  NaN values are left out.

    Parameters
    ----------
    values : Tensor (P,)
    groups : Tensor (P,)
        The group (image index) of each pair.
    resamples, confidence, seed
        Number of resamples, coverage, and the seed of :func:`bootstrap_counts`.

    Examples
    --------
    >>> values = torch.tensor([0.1, 0.3, 0.2, 0.4])
    >>> result = paired_bootstrap(values, torch.tensor([0, 0, 1, 2]), resamples=200, seed=1)
    >>> round(result.estimate, 4), result.low <= result.estimate <= result.high
    (0.25, True)
    """
    values = torch.as_tensor(values, dtype=torch.float64)
    groups = torch.as_tensor(groups)
    if values.dim() != 1 or groups.shape != values.shape:
        raise ValidationError(f"values and groups must be 1-D of one length, got {tuple(values.shape)} and "
                              f"{tuple(groups.shape)}")
    valid = ~torch.isnan(values)
    values, groups = values[valid], groups[valid]
    if not len(values):
        return BootstrapInterval(math.nan, math.nan, math.nan)
    _, group_of = torch.unique(groups, return_inverse=True)
    counts = bootstrap_counts(int(group_of.max()) + 1, resamples=resamples, seed=seed, device=values.device)
    weights = counts[:, group_of]  # (resamples, pairs): each pair counts as often as its image was drawn
    statistics = (weights * values).sum(1) / weights.sum(1)
    low, high = percentile_interval(statistics, confidence=confidence)
    return BootstrapInterval(float(values.mean()), low, high)


def weighted_average_precision(scores: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Average precision of one score column under per-sample weights, for many weightings at once.

    ``scores`` and ``labels`` are ``(N,)``; ``weights`` is ``(R, N)`` (e.g. bootstrap counts).  Each
    row's AP is scikit-learn's ``average_precision_score(labels, scores, sample_weight=row)``: tied
    scores form one threshold.  NaN for a row whose positive weight is zero.

    Examples
    --------
    >>> scores, labels = torch.tensor([0.9, 0.8, 0.3, 0.1]), torch.tensor([1.0, 0.0, 1.0, 0.0])
    >>> weighted_average_precision(scores, labels, torch.ones(1, 4))  # (1 + 2/3) / 2
    tensor([0.8333], dtype=torch.float64)
    """
    order = torch.argsort(scores.double(), descending=True, stable=True)
    s, y = scores.double()[order], labels.double()[order]
    w = weights.double()[:, order]
    ends = tie_group_ends(s)  # tied scores are one threshold
    true_positive, seen = torch.cumsum(w * y, 1), torch.cumsum(w, 1)
    precision = true_positive[:, ends] / seen[:, ends]
    positive = (w * y).sum(1)
    return (w * y * precision).sum(1) / positive
