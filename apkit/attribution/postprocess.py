"""Turning raw attributions into the maps the paper evaluates.

Each function is one step of the paper's recipes (METHOD §6): sum over channels, flip the sign
for a negative target logit, keep the positive part, upsample bilinearly to the input size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def sum_channels(attributions: torch.Tensor) -> torch.Tensor:
    """``(M, C, h, w) -> (M, h, w)``: the sum over channels (RGB for input maps)."""
    return attributions.sum(1)


def flip_negative(maps: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """Multiply the map of each pair whose target logit is negative by -1.

    Relevance rules that conserve the logit (LRP z+, RAP) give an all-negative map for a negative
    logit; the paper flips it so that "explains the class" reads as positive in every case.

    Examples
    --------
    >>> flip_negative(torch.tensor([[[-2.0]], [[3.0]]]), torch.tensor([-1.0, 1.0])).flatten().tolist()
    [2.0, 3.0]
    """
    sign = torch.where(logits < 0, -1.0, 1.0).to(maps.dtype)
    return maps * sign.view(-1, *([1] * (maps.dim() - 1)))


def positive_part(maps: torch.Tensor) -> torch.Tensor:
    """Keep the positive values, zero the rest."""
    return maps.clamp(min=0)


def to_input_resolution(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear upsampling of ``(M, h, w)`` maps to ``size`` (a no-op when already that size).

    Uses half-pixel centres (``align_corners=False``), as OpenCV's ``resize`` and Captum's
    ``LayerAttribution.interpolate(..., "bilinear")`` do.

    Examples
    --------
    >>> to_input_resolution(torch.ones(2, 4, 4), (8, 8)).shape
    torch.Size([2, 8, 8])
    """
    if tuple(maps.shape[-2:]) == tuple(size):
        return maps
    return F.interpolate(maps.unsqueeze(1), size=tuple(size), mode="bilinear", align_corners=False).squeeze(1)
