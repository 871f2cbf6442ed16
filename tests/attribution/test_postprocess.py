"""The steps from raw attributions to evaluation maps, on hand-computed values."""

import torch

from apkit.attribution import postprocess


def test_sum_channels():
    attributions = torch.arange(12.0).view(1, 3, 2, 2)  # channels [0..3], [4..7], [8..11]
    assert postprocess.sum_channels(attributions).tolist() == [[[12.0, 15.0], [18.0, 21.0]]]


def test_flip_negative_and_positive_part():
    maps = torch.tensor([[[1.0, -2.0]], [[-3.0, 4.0]], [[5.0, -6.0]]])
    flipped = postprocess.flip_negative(maps, torch.tensor([0.5, -1.0, 0.0]))  # a zero logit is not negative
    assert flipped.tolist() == [[[1.0, -2.0]], [[3.0, -4.0]], [[5.0, -6.0]]]
    assert postprocess.positive_part(maps).tolist() == [[[1.0, 0.0]], [[0.0, 4.0]], [[5.0, 0.0]]]


def test_to_input_resolution_is_bilinear_with_half_pixel_centres():
    maps = torch.tensor([[[0.0, 1.0], [2.0, 3.0]]])  # value = x + 2 y
    # Output pixel i samples the input at (i + 0.5) / 2 - 0.5, clamped to the edges: 0, 0.25, 0.75, 1.
    weights = torch.tensor([0.0, 0.25, 0.75, 1.0])
    expected = weights[None, :] + 2 * weights[:, None]
    torch.testing.assert_close(postprocess.to_input_resolution(maps, (4, 4)), expected[None])
    assert postprocess.to_input_resolution(maps, (2, 2)) is maps  # already at that size: no copy
