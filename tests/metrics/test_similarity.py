"""Map similarity against closed forms and numpy references."""

import math

import numpy as np
import pytest
import torch

from apkit.core.errors import ValidationError
from apkit.metrics.similarity import cosine_similarity, normalized_l2


def test_closed_forms():
    a = torch.tensor([[[3.0, 4.0]], [[1.0, 0.0]], [[1.0, 2.0]], [[0.0, 0.0]]])
    b = torch.tensor([[[4.0, 3.0]], [[0.0, 5.0]], [[-2.0, -4.0]], [[1.0, 1.0]]])
    cos = cosine_similarity(a, b)
    l2 = normalized_l2(a, b)
    assert cos[0].item() == pytest.approx(24 / 25)
    assert cos[1].item() == pytest.approx(0.0)
    assert cos[2].item() == pytest.approx(-1.0)
    assert l2[0].item() == pytest.approx(math.sqrt(0.2 ** 2 + 0.2 ** 2))
    assert l2[1].item() == pytest.approx(math.sqrt(2.0))
    assert l2[2].item() == pytest.approx(2.0)
    assert math.isnan(cos[3].item()) and math.isnan(l2[3].item())  # an all-zero map has no direction


def test_against_numpy_and_identity():
    gen = torch.Generator().manual_seed(0)
    a = torch.rand(7, 9, 5, generator=gen, dtype=torch.float64)
    b = torch.rand(7, 9, 5, generator=gen, dtype=torch.float64)
    an, bn = a.reshape(7, -1).numpy(), b.reshape(7, -1).numpy()
    ref_cos = (an * bn).sum(1) / (np.linalg.norm(an, axis=1) * np.linalg.norm(bn, axis=1))
    ref_l2 = np.linalg.norm(bn / np.linalg.norm(bn, axis=1, keepdims=True)
                            - an / np.linalg.norm(an, axis=1, keepdims=True), axis=1)
    np.testing.assert_allclose(cosine_similarity(a, b).numpy(), ref_cos, rtol=1e-12)
    np.testing.assert_allclose(normalized_l2(a, b).numpy(), ref_l2, rtol=1e-12)
    # the two are tied: l2^2 = 2 - 2 cos; both ignore the maps' scale
    np.testing.assert_allclose(normalized_l2(a, b).numpy() ** 2, 2 - 2 * ref_cos, rtol=1e-10)
    np.testing.assert_allclose(cosine_similarity(a * 7.0, b).numpy(), ref_cos, rtol=1e-12)
    assert torch.allclose(cosine_similarity(a, a), torch.ones(7, dtype=torch.float64))
    assert torch.allclose(normalized_l2(a, 3 * a), torch.zeros(7, dtype=torch.float64), atol=1e-12)


@pytest.mark.parametrize("fn", [cosine_similarity, normalized_l2])
def test_bad_inputs(fn):
    a = torch.rand(2, 3, 3)
    with pytest.raises(ValidationError, match="same shape"):
        fn(a, a[:, :2])
    with pytest.raises(ValidationError, match="same device"):
        fn(a, torch.rand(2, 3, 3, device="meta"))
    bad = a.clone()
    bad[0, 0, 0] = math.nan
    with pytest.raises(ValidationError, match="NaN"):
        fn(a, bad)
    with pytest.raises(ValidationError, match="floating-point"):
        fn(a.long(), a.long())
