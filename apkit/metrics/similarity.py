"""Similarity of two batches of attribution maps, e.g. a teacher's and its compressed student's.

Both functions follow the supplement of the paper (C.3) and return one value per pair of maps,
``(N,)``, NaN where a map is all zero (its direction is undefined).

* :func:`cosine_similarity` -- ``<a, b> / (||a|| ||b||)``, 1 for maps of the same shape;
* :func:`normalized_l2` -- ``|| a/||a|| - b/||b|| ||``, 0 for maps of the same shape, at most 2.

The two are tied by ``normalized_l2 ** 2 == 2 - 2 * cosine_similarity``.  (The paper's ImageNet
tables print the L2 column in units of 1e-5, which this definition cannot produce for unit-norm
maps; their averaging or normalisation is unknown, so compare trends, not that column's scale.)
"""

from __future__ import annotations

import math

import torch

from apkit.core.errors import ValidationError
from apkit.core.validation import check_same_shape, check_tensor

__all__ = ["cosine_similarity", "normalized_l2"]


def _flat_pair(a: object, b: object) -> tuple[torch.Tensor, torch.Tensor]:
    a = check_tensor(a, "a", ndim=(2, 3), floating=True)
    b = check_tensor(b, "b", ndim=(2, 3), floating=True)
    check_same_shape(a, b, "a", "b")
    dtype = torch.promote_types(torch.promote_types(a.dtype, b.dtype), torch.float32)
    width = math.prod(a.shape[1:])  # explicit, so that an empty batch reshapes too
    a, b = a.reshape(a.shape[0], width).to(dtype), b.reshape(b.shape[0], width).to(dtype)
    for name, x in (("a", a), ("b", b)):
        if x.numel() and not bool(torch.isfinite(x).all()):
            raise ValidationError(f"{name} must be free of NaN and infinite values; drop those maps first")
    return _unit_peak(a), _unit_peak(b)


def _unit_peak(x: torch.Tensor) -> torch.Tensor:
    """Each row divided by its largest magnitude: both metrics ignore scale, and the norms then neither
    underflow (maps below 1e-19 in float32) nor overflow (above 1e19)."""
    peak = x.abs().amax(1, keepdim=True) if x.shape[1] else torch.ones(len(x), 1, dtype=x.dtype, device=x.device)
    return torch.where(peak > 0, x / peak, x)


def cosine_similarity(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of each pair of maps, ``<a, b> / (||a||_2 ||b||_2)``.

    Parameters
    ----------
    a, b : torch.Tensor
        ``(N, H, W)`` (or flattened ``(N, D)``) floating-point maps on one device.

    Returns
    -------
    torch.Tensor
        ``(N,)`` in ``[-1, 1]``, NaN where either map is all zero.

    Examples
    --------
    >>> a = torch.tensor([[[1.0, 0.0], [0.0, 0.0]], [[1.0, 1.0], [0.0, 0.0]]])
    >>> b = torch.tensor([[[2.0, 0.0], [0.0, 0.0]], [[1.0, 0.0], [0.0, 0.0]]])
    >>> cosine_similarity(a, b)
    tensor([1.0000, 0.7071])
    """
    a, b = _flat_pair(a, b)
    norms = a.norm(dim=1) * b.norm(dim=1)
    cos = (a * b).sum(1) / norms
    return cos.clamp_(-1.0, 1.0).masked_fill_(norms == 0, math.nan)


def normalized_l2(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """L2 distance between each pair of maps after scaling each map to unit L2 norm.

    ``|| b / ||b||_2 - a / ||a||_2 ||_2`` (supplement C.3), symmetric in ``a`` and ``b``.

    Parameters
    ----------
    a, b : torch.Tensor
        ``(N, H, W)`` (or flattened ``(N, D)``) floating-point maps on one device.

    Returns
    -------
    torch.Tensor
        ``(N,)`` in ``[0, 2]``, NaN where either map is all zero.

    Examples
    --------
    >>> a = torch.tensor([[[3.0, 4.0]]])
    >>> b = torch.tensor([[[4.0, 3.0]]])
    >>> normalized_l2(a, b)  # unit vectors (0.6, 0.8) and (0.8, 0.6)
    tensor([0.2828])
    """
    a, b = _flat_pair(a, b)
    norm_a, norm_b = a.norm(dim=1, keepdim=True), b.norm(dim=1, keepdim=True)
    distance = (a / norm_a - b / norm_b).norm(dim=1)
    return distance.masked_fill_(((norm_a == 0) | (norm_b == 0)).squeeze(1), math.nan)
