"""Unstructured (global magnitude) pruning: the paper's schedule, global threshold, masks, baking."""

import copy

import pytest
import torch
from torch import nn

from apkit import models
from apkit.compression import (
    bake_masks,
    has_masks,
    iterative_sparsity,
    magnitude_prune,
    prunable_weights,
    sparsity_report,
)
from apkit.core.errors import CheckpointError, ValidationError


def test_sixteen_steps_of_twenty_percent_reach_the_papers_sparsity():
    torch.manual_seed(0)
    net = models.create("vgg16_bn", num_classes=20, width_divisor=8)
    dense = copy.deepcopy(net)
    n = sum(m.weight.numel() for _, m in prunable_weights(net))
    previous_mask = None
    for step in range(1, 17):
        magnitude_prune(net, sparsity=iterative_sparsity(step, 0.2), inplace=True)
        report = sparsity_report(net)
        assert report["zero_weights"] == int(n * (1 - 0.8 ** step) + 1e-9)
        mask = torch.cat([m.weight_mask.flatten() for _, m in prunable_weights(net)])
        if previous_mask is not None:  # a pruned weight stays pruned
            assert bool((mask <= previous_mask).all())
        previous_mask = mask
    assert iterative_sparsity(16, 0.2) == pytest.approx(0.9719, abs=5e-5)
    assert report["weight_sparsity"] == pytest.approx(1 - 0.8 ** 16, abs=1e-5)
    # One global threshold over all conv weights, the first conv included.
    weights = torch.cat([m.weight_orig.detach().flatten() for _, m in prunable_weights(net)])
    masks = torch.cat([m.weight_mask.flatten() for _, m in prunable_weights(net)])
    assert float(weights[masks == 0].abs().max()) <= float(weights[masks == 1].abs().min())
    assert float((net.features[0].weight == 0).float().mean()) > 0  # the first conv is pruned too
    # Linear, BatchNorm and biases are untouched.
    for name, p in net.named_parameters():
        if not name.endswith("weight_orig"):
            assert torch.equal(p, dense.state_dict()[name]), name
    bake_masks(net)
    assert not has_masks(net) and not any("mask" in k for k in net.state_dict())
    assert sparsity_report(net)["zero_weights"] == report["zero_weights"]
    expected_nonzero = models.count_parameters(dense, nonzero=True) - report["zero_weights"]  # BN biases are 0
    assert models.count_parameters(net, nonzero=True) == expected_nonzero == report["nonzero_params"]


def test_one_shot_sparsities_and_magnitude_order():
    torch.manual_seed(1)
    net = models.create("vgg_small", num_classes=8)
    for target in (0.6, 0.9):
        pruned = magnitude_prune(net, sparsity=target)
        assert not has_masks(net)  # the original is untouched
        w = torch.cat([m.weight.detach().flatten() for _, m in prunable_weights(net)])
        expected = w.abs() > w.abs().sort().values[int(target * w.numel()) - 1]
        got = torch.cat([m.weight_mask.flatten() for _, m in prunable_weights(pruned)]).bool()
        assert torch.equal(got, expected)
        assert sparsity_report(pruned)["weight_sparsity"] == pytest.approx(target, abs=1e-5)


def test_masks_hold_during_training_and_must_be_baked_before_saving(tmp_path):
    torch.manual_seed(2)
    net = magnitude_prune(models.create("vgg_small", num_classes=3, input_size=32), sparsity=0.8)
    zeros = [(m.weight == 0).clone() for _, m in prunable_weights(net)]
    opt = torch.optim.SGD(net.parameters(), lr=0.5, momentum=0.9, weight_decay=1e-3)
    for _ in range(3):
        opt.zero_grad()
        nn.functional.multilabel_soft_margin_loss(net(torch.randn(4, 3, 32, 32)), torch.ones(4, 3)).backward()
        opt.step()
    net(torch.randn(1, 3, 32, 32))
    for z, (_, m) in zip(zeros, prunable_weights(net)):
        assert bool((m.weight[z] == 0).all()) and bool((m.weight[~z] != 0).all())
    with pytest.raises(CheckpointError, match="bake_masks"):
        models.save_checkpoint(net, tmp_path / "masked.pt")
    x = torch.randn(2, 3, 32, 32)
    net.eval()
    before = net(x)
    bake_masks(net)
    assert torch.allclose(net(x), before)
    models.save_checkpoint(net, tmp_path / "baked.pt")
    loaded = models.load_checkpoint(tmp_path / "baked.pt")
    assert sparsity_report(loaded)["weight_sparsity"] == pytest.approx(0.8, abs=1e-5)


def test_unstructured_bad_inputs():
    net = models.create("vgg_small", num_classes=3)
    with pytest.raises(ValidationError, match="sparsity"):
        magnitude_prune(net, sparsity=1.0)
    with pytest.raises(ValidationError, match="sparsity"):
        magnitude_prune(net, sparsity=-0.1)
    sparse = magnitude_prune(net, sparsity=0.5)
    with pytest.raises(ValidationError, match="already has 0.5"):
        magnitude_prune(sparse, sparsity=0.3)
    with pytest.raises(ValidationError, match="no Conv2d"):
        magnitude_prune(nn.Sequential(nn.Linear(2, 2)), sparsity=0.5)
    with pytest.raises(ValidationError, match="layer_types"):
        magnitude_prune(net, sparsity=0.5, layer_types=["conv"])
    with pytest.raises(ValidationError, match="amount"):
        iterative_sparsity(3, 1.5)
