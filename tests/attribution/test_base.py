"""What every attribution method shares: input checks, chunking of pairs, the model guard, the Method class."""

import pytest
import torch
from torch import nn

from apkit.attribution.base import (
    Method,
    check_batch_size,
    check_classes,
    check_inputs,
    check_layer_output,
    chunks,
    frozen,
    gather_chunks,
)
from apkit.core.errors import UnknownNameError, ValidationError


def test_check_inputs_and_batch_size():
    images = torch.zeros(2, 3, 4, 4)
    assert check_inputs(images) is images
    with pytest.raises(ValidationError, match="at least one image"):
        check_inputs(torch.zeros(0, 3, 4, 4))
    with pytest.raises(ValidationError, match="rank 4"):
        check_inputs(torch.zeros(3, 4, 4))
    with pytest.raises(ValidationError, match="NaN"):
        check_inputs(torch.full((1, 3, 2, 2), float("nan")))
    assert check_batch_size(None) is None and check_batch_size(8) == 8
    with pytest.raises(ValidationError, match="batch_size must be >= 1"):
        check_batch_size(0)


def test_check_classes_names_the_valid_range():
    check_classes(torch.tensor([[0, 4]]), 5)
    check_classes(torch.zeros(0, 2, dtype=torch.long), 5)  # no pair: nothing to check
    with pytest.raises(ValidationError, match=r"target class 5 is out of range: .* \(valid classes 0..4\)"):
        check_classes(torch.tensor([[0, 1], [1, 5]]), 5)


def test_check_layer_output_suggests_a_spatial_layer():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(144, 2))
    check_layer_output(net, "1", torch.Size([1, 4, 6, 6]), torch.zeros(1, 3, 8, 8))
    with pytest.raises(ValidationError, match=r"layer '3' outputs \(N, 2\), not a .* such as '1'"):
        check_layer_output(net, "3", torch.Size([1, 2]), torch.zeros(1, 3, 8, 8))
    with pytest.raises(ValidationError, match="outputs no tensor"):
        check_layer_output(net, "3", None, torch.zeros(1, 3, 8, 8))


def test_frozen_restores_each_flag():
    net = nn.Linear(2, 2)
    net.bias.requires_grad_(False)
    with frozen(net):
        assert not any(p.requires_grad for p in net.parameters())
    assert net.weight.requires_grad and not net.bias.requires_grad


def test_chunks_group_pairs_by_image_and_gather_restores_their_order():
    pairs = torch.tensor([[2, 0], [0, 1], [2, 3], [0, 4], [1, 5]])
    pieces = list(chunks(pairs, 2))
    # Sorted by image (stable): positions 1, 3 (image 0), 4 (image 1), 0, 2 (image 2), two per chunk.
    assert [p.tolist() for p, _, _ in pieces] == [[1, 3], [4, 0], [2]]
    assert [images.tolist() for _, images, _ in pieces] == [[0], [1, 2], [2]]
    assert [local.tolist() for _, _, local in pieces] == [[[0, 1], [0, 4]], [[0, 5], [1, 0]], [[0, 3]]]
    assert len(list(chunks(pairs, None))) == 1  # no batch size: one chunk
    values = [(positions, pairs[positions, 1] * 10) for positions, _, _ in pieces]
    assert gather_chunks(values, len(pairs)).tolist() == [0, 10, 30, 40, 50]


class _Scaled(Method):
    """A toy input method: the image times its class index, so every pair's result is known."""

    name = "scaled"

    def _attribute(self, inputs, pairs, *, offset=0.0):
        return inputs[pairs[:, 0]] * pairs[:, 1].view(-1, 1, 1, 1) + offset, pairs[:, 1].double()


def _net():
    return nn.Sequential(nn.Conv2d(1, 2, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2, 3))


def test_method_runs_chunks_in_eval_mode_and_returns_pairs_in_their_order():
    net = _net().train()
    images = torch.arange(3.0).view(3, 1, 1, 1).expand(3, 1, 2, 2).contiguous()
    pairs = torch.tensor([[2, 1], [0, 2], [1, 2], [2, 2]])
    result = _Scaled(net).attribute(images, pairs, batch_size=1, offset=0.5)
    assert result[:, 0, 0, 0].tolist() == [2.5, 0.5, 2.5, 4.5]  # image value * class + offset
    assert net.training  # the model's mode is given back
    assert _Scaled(net).heatmap(images, pairs).shape == (4, 2, 2)
    with pytest.raises(ValidationError, match=r"scaled does not take option\(s\) colour; its options are: offset"):
        _Scaled(net).attribute(images, pairs, colour=True)
    with pytest.raises(ValidationError, match="selects no"):
        _Scaled(net).attribute(images, torch.zeros(0, 2, dtype=torch.long))
    with pytest.raises(ValidationError, match="inputs have 3 channel"):
        _Scaled(net).attribute(torch.zeros(1, 3, 2, 2), 0)


def test_method_layers():
    net = _net()
    assert _Scaled(net).layer is None and _Scaled(net, "1").layer == "1"
    with pytest.raises(UnknownNameError, match="unknown layer 'nope'"):
        _Scaled(net, "nope")

    class InputOnly(_Scaled):
        accepts_layer = False

    with pytest.raises(ValidationError, match="takes no layer"):
        InputOnly(net, "1")

    class LayerMethod(_Scaled):
        is_layer_method = True

    net.attribution_layer = "0"
    assert LayerMethod(net).layer == "0"  # the layer the model names
