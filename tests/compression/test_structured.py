"""Structured (L1 filter) pruning: the paper's VGG16 sizes, kept filters and classifier columns, ResNets."""

import copy

import pytest
import torch
from torch import nn

from apkit import models
from apkit.compression import paper_vgg16_ratios, prune_structured, vgg_config
from apkit.core.errors import UnknownNameError, ValidationError


def _randomise_bn(model):
    # Non-trivial BatchNorm statistics, so that slicing the wrong channels would show in the logits.
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.rand(m.num_features, generator=g) - 0.5)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.rand(m.num_features, generator=g) - 0.5)
    return model


def test_paper_vgg16_structured_model_has_the_papers_size():
    net = models.create("vgg16_bn", num_classes=20)
    ratios = paper_vgg16_ratios(net, 0.7)
    assert sorted(ratios, key=lambda n: int(n.split(".")[1])) == [
        "features.0", "features.24", "features.27", "features.30", "features.34", "features.37", "features.40"]
    pruned = prune_structured(net, example_inputs=torch.randn(1, 3, 227, 227), pruning_ratio_dict=ratios,
                              inplace=True)
    assert models.count_parameters(pruned) == 3_269_153
    assert vgg_config(pruned) == [19, 64, "M", 128, 128, "M", 256, 256, 256, "M", 153, 153, 153, "M",
                                  153, 153, 153, "M"]
    assert pruned.classifier[1].in_features == 153 * 7 * 7
    assert pruned.config == vgg_config(pruned)
    assert pruned.matching_layer == "features.43"


def _hand_sliced_reference(net, ratio, *, tile_wrongly=False):
    """Keep the top-L1 filters of every conv by hand; slice BN, the next conv and the classifier."""
    ref = copy.deepcopy(net)
    convs = [m for m in ref.features if isinstance(m, nn.Conv2d)]
    bns = [m for m in ref.features if isinstance(m, nn.BatchNorm2d)]
    previous = torch.arange(3)
    for conv, bn in zip(convs, bns):
        keep_n = int(conv.out_channels * (1 - ratio))
        l1 = conv.weight.detach().abs().sum((1, 2, 3))  # each filter's own L1 norm (Li et al.)
        kept = l1.topk(keep_n).indices.sort().values
        conv.weight.data = conv.weight.data[kept][:, previous]
        conv.bias.data = conv.bias.data[kept]
        for name in ("weight", "bias"):
            getattr(bn, name).data = getattr(bn, name).data[kept]
        bn.running_mean, bn.running_var = bn.running_mean[kept], bn.running_var[kept]
        conv.out_channels, conv.in_channels, bn.num_features = keep_n, len(previous), keep_n
        previous = kept
    linear = ref.classifier[1]
    channels = len(l1)  # the last conv's original width
    positions = linear.in_features // channels
    channel_mask = torch.zeros(channels, dtype=torch.bool)
    channel_mask[previous] = True
    # The flattened map is channel-major: column c*h*w + p belongs to channel c.
    columns = channel_mask.repeat(positions) if tile_wrongly else channel_mask.repeat_interleave(positions)
    linear.weight.data = linear.weight.data[:, columns]
    linear.in_features = int(columns.sum())
    return ref


def test_pruned_vgg_equals_a_hand_sliced_network_with_repeat_interleave():
    torch.manual_seed(0)
    net = _randomise_bn(models.create("vgg_small", num_classes=5)).eval()
    pruned = prune_structured(net, example_inputs=torch.randn(1, 3, 64, 64), pruning_ratio=0.5).eval()
    reference = _hand_sliced_reference(net, 0.5).eval()
    wrong = _hand_sliced_reference(net, 0.5, tile_wrongly=True).eval()
    x = torch.randn(4, 3, 64, 64)
    with torch.no_grad():
        out, ref_out, wrong_out = pruned(x), reference(x), wrong(x)
    assert vgg_config(pruned) == [8, "M", 16, "M", 32, 32, "M", 64, 64, "M"]
    assert torch.allclose(out, ref_out, atol=1e-5)
    assert not torch.allclose(out, wrong_out, atol=1e-3)  # the reference code's `repeat` bug differs
    for (name, p), (_, q) in zip(pruned.named_parameters(), reference.named_parameters()):
        assert torch.equal(p, q), name


def test_original_model_is_untouched_and_pruned_model_round_trips(tmp_path):
    torch.manual_seed(1)
    net = models.create("vgg_small", num_classes=4).eval()
    before = copy.deepcopy(net.state_dict())
    pruned = prune_structured(net, example_inputs=torch.randn(1, 3, 64, 64), pruning_ratio=0.6).eval()
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in before.items())
    assert vgg_config(net) == [16, "M", 32, "M", 64, 64, "M", 128, 128, "M"]
    models.save_checkpoint(pruned, tmp_path / "p.pt")
    loaded = models.load_checkpoint(tmp_path / "p.pt")
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(loaded(x), pruned(x), atol=1e-6)


def test_resnet18_uniform_pruning_handles_residual_groups():
    torch.manual_seed(2)
    net = models.create("resnet18", num_classes=6).eval()
    original = copy.deepcopy(net)
    pruned = prune_structured(net, example_inputs=torch.randn(1, 3, 32, 32), pruning_ratio=0.5).eval()
    # Coupled channels: the stem and every block of a stage share one channel set.
    assert pruned.conv1.out_channels == pruned.layer1[1].conv2.out_channels == 32
    assert pruned.layer4[1].conv2.out_channels == pruned.fc.in_features == 256
    assert pruned.fc.out_features == 6  # the classifier's outputs are never pruned
    assert pruned(torch.randn(2, 3, 32, 32)).shape == (2, 6)
    # Inside a block: conv1 keeps its top-L1 filters and conv2 takes exactly those input channels.
    w = original.layer1[0].conv1.weight.detach()
    kept = w.abs().sum((1, 2, 3)).topk(32).indices.sort().values
    stem = original.conv1.weight.detach()
    kept_residual = torch.tensor([int((stem == row).all((1, 2, 3)).nonzero()) for row in pruned.conv1.weight])
    expected = w[kept][:, kept_residual]
    assert torch.equal(pruned.layer1[0].conv1.weight, expected)
    conv2 = original.layer1[0].conv2.weight.detach()[kept_residual][:, kept]
    assert torch.equal(pruned.layer1[0].conv2.weight, conv2)
    assert models.count_parameters(pruned) < models.count_parameters(original) / 3


def test_structured_pruning_bad_inputs():
    net = models.create("vgg_small", num_classes=3)
    x = torch.randn(1, 3, 64, 64)
    with pytest.raises(ValidationError, match="13 convolutions"):
        paper_vgg16_ratios(net)
    with pytest.raises(UnknownNameError, match="unknown layer"):
        prune_structured(net, example_inputs=x, pruning_ratio_dict={"features.99": 0.5})
    with pytest.raises(ValidationError, match="pruning_ratio"):
        prune_structured(net, example_inputs=x, pruning_ratio=1.2)
    with pytest.raises(ValidationError, match="example_inputs"):
        prune_structured(net, example_inputs="image")
    with pytest.raises(UnknownNameError, match="l1, group_l1"):
        prune_structured(net, example_inputs=x, pruning_ratio=0.5, importance="taylor")
    with pytest.raises(ValidationError, match="list of layer names"):
        prune_structured(net, example_inputs=x, pruning_ratio=0.5, ignored_layers="features.0")
    kept = prune_structured(net, example_inputs=x, pruning_ratio=0.5, ignored_layers=["features.0"])
    assert vgg_config(kept)[0] == 16
