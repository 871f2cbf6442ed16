"""Confidence intervals for apkit's comparisons: Student's t over a few seeds, a paired bootstrap over images.

* :func:`t_interval` -- the mean of a few independent values (e.g. one per training seed) and the
  half-width of its two-sided Student's t interval, ``t_{(1+c)/2, n-1} * s / sqrt(n)``;
* :func:`student_t_quantile` -- the t quantile itself, from the regularized incomplete beta
  function (no SciPy needed; the tests hold it against SciPy and the closed forms for 1 and 2
  degrees of freedom).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from apkit._validation import check_float, check_int
from apkit.errors import ValidationError

__all__ = ["student_t_quantile", "t_interval"]


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
