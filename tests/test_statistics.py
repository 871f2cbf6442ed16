"""Confidence intervals: Student's t quantile and interval against closed forms and SciPy."""

import math

import pytest
import torch
from scipy import stats

from apkit.errors import ValidationError
from apkit.metrics.statistics import student_t_quantile, t_interval


@pytest.mark.parametrize("p", [0.6, 0.9, 0.95, 0.975, 0.995, 0.025])
def test_t_quantile_closed_forms(p):
    # One degree of freedom: Cauchy, tan(pi (p - 1/2)); two: (2p - 1) / sqrt(2 p (1 - p)).
    assert student_t_quantile(p, 1) == pytest.approx(math.tan(math.pi * (p - 0.5)), rel=1e-10)
    assert student_t_quantile(p, 2) == pytest.approx((2 * p - 1) / math.sqrt(2 * p * (1 - p)), rel=1e-10)


@pytest.mark.parametrize("df", [0.5, 3, 4, 7, 10, 29, 100, 10_000])
@pytest.mark.parametrize("p", [0.55, 0.8, 0.95, 0.975, 0.999, 0.01])
def test_t_quantile_equals_scipy(df, p):
    assert student_t_quantile(p, df) == pytest.approx(stats.t.ppf(p, df), rel=1e-9)


def test_t_interval_equals_the_textbook_formula():
    values = torch.tensor([[0.91, 0.2], [0.87, 0.4], [0.95, 0.9], [0.90, math.nan]], dtype=torch.float64)
    mean, half = t_interval(values, confidence=0.9)
    for column in range(2):
        x = values[:, column]
        x = x[~torch.isnan(x)].numpy()
        expected = stats.t.ppf(0.95, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x))
        assert float(mean[column]) == pytest.approx(x.mean(), abs=1e-15)
        assert float(half[column]) == pytest.approx(expected, rel=1e-10)
    # three seeds: t_{0.975, 2} = 4.302652729696...
    _, half = t_interval([1.0, 2.0, 4.0])
    assert float(half) == pytest.approx(4.302652729696142 * math.sqrt(7 / 3) / math.sqrt(3), rel=1e-10)


def test_t_interval_covers_at_the_nominal_rate():
    gen = torch.Generator().manual_seed(0)
    draws = torch.randn(3, 20_000, generator=gen, dtype=torch.float64) * 2.0 + 5.0
    mean, half = t_interval(draws, dim=0)
    covered = ((mean - half <= 5.0) & (5.0 <= mean + half)).double().mean()
    assert float(covered) == pytest.approx(0.95, abs=0.01)


def test_t_interval_edges():
    mean, half = t_interval([3.0])
    assert float(mean) == 3.0 and math.isnan(float(half))
    with pytest.raises(ValidationError, match="confidence"):
        t_interval([1.0, 2.0], confidence=1.5)
    with pytest.raises(ValidationError, match="scalar"):
        t_interval(torch.tensor(1.0))
