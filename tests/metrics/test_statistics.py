"""Confidence intervals: Student's t quantile and interval against closed forms and SciPy."""

import math

import numpy as np
import pytest
import torch
from scipy import stats

from apkit.core.errors import ValidationError
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


def test_paired_bootstrap_equals_a_naive_loop_over_resamples():
    from apkit.metrics.statistics import paired_bootstrap

    gen = torch.Generator().manual_seed(3)
    groups = torch.tensor([0, 0, 1, 2, 2, 2, 5, 7])  # images 0..7, some with several classes, some absent
    values = torch.randn(len(groups), generator=gen, dtype=torch.float64)
    result = paired_bootstrap(values, groups, resamples=300, confidence=0.9, seed=11)
    # The same draws, one resample at a time: images drawn with replacement, all their pairs taken.
    images = torch.unique(groups)
    draws = torch.randint(len(images), (300, len(images)), generator=torch.Generator().manual_seed(11))
    means = []
    for row in draws:
        picked = torch.cat([values[groups == images[i]] for i in row.tolist()])
        means.append(float(picked.mean()))
    low, high = np.quantile(means, [0.05, 0.95])
    assert result.estimate == pytest.approx(float(values.mean()), abs=1e-15)
    assert result.low == pytest.approx(low, abs=1e-12) and result.high == pytest.approx(high, abs=1e-12)


def test_paired_bootstrap_covers_the_true_difference_at_about_the_nominal_rate():
    from apkit.metrics.statistics import paired_bootstrap

    gen = torch.Generator().manual_seed(0)
    covered, trials, true = 0, 300, 0.02
    for trial in range(trials):
        images = 60
        per_image = torch.randn(images, generator=gen, dtype=torch.float64) * 0.05  # shared by an image's classes
        groups = torch.arange(images).repeat_interleave(2)
        values = true + per_image[groups] + torch.randn(len(groups), generator=gen, dtype=torch.float64) * 0.03
        result = paired_bootstrap(values, groups, resamples=400, seed=trial)
        covered += result.low <= true <= result.high
    assert covered / trials == pytest.approx(0.95, abs=0.04)


def test_weighted_average_precision_equals_sklearn_with_ties():
    from sklearn.metrics import average_precision_score

    from apkit.metrics.statistics import bootstrap_counts, weighted_average_precision

    gen = torch.Generator().manual_seed(5)
    scores = torch.randint(0, 6, (80,), generator=gen).double()  # many ties
    labels = (torch.rand(80, generator=gen) < 0.3).double()
    weights = bootstrap_counts(80, resamples=20, seed=2)
    ours = weighted_average_precision(scores, labels, weights)
    for row, value in zip(weights, ours):
        expected = average_precision_score(labels.numpy(), scores.numpy(), sample_weight=row.numpy())
        assert float(value) == pytest.approx(expected, abs=1e-12)
