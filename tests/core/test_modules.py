"""Module mechanics: layers by dotted name, eval mode restored, output capture that removes its hooks."""

import pytest
import torch
from torch import nn

from apkit import models
from apkit.core.errors import UnknownNameError, ValidationError
from apkit.core.modules import (
    called_output,
    capture_outputs,
    evaluating,
    feature_map,
    get_layer,
    overwritten_in_place,
    unwrap,
)


def test_unknown_layer_lists_the_names():
    model = models.create("vgg_small", num_classes=8)
    with pytest.raises(UnknownNameError) as info:
        get_layer(model, "features.99")
    message = str(info.value)
    assert "unknown layer 'features.99'" in message and "features.20" in message and "classifier.1" in message
    with pytest.raises(ValidationError):
        get_layer(model, 42)
    with pytest.raises(UnknownNameError):
        with capture_outputs(model, ["features.0", "nope"]):
            pass
    assert not get_layer(model, "features.0")._forward_hooks  # the first hook was removed again


def test_capture_removes_hooks_when_the_block_raises():
    model = models.create("vgg_small", num_classes=8)
    with pytest.raises(RuntimeError):
        with capture_outputs(model, ["features.20"]):
            raise RuntimeError("boom")
    assert not get_layer(model, "features.20")._forward_hooks


def test_evaluating_restores_each_mode_and_device():
    net = nn.Sequential(nn.Linear(2, 2), nn.Dropout(), nn.Sequential(nn.BatchNorm1d(2)))
    net.train()
    net[2].eval()  # mixed modes come back exactly
    with evaluating(net):
        assert not any(m.training for m in net.modules())
    assert [m.training for m in net.modules()] == [True, True, True, False, False]
    with pytest.raises(RuntimeError, match="boom"):
        with evaluating(net, device="cpu"):
            raise RuntimeError("boom")
    assert [m.training for m in net.modules()] == [True, True, True, False, False]  # also when the block raises
    if torch.cuda.is_available():  # a model moved for the block goes back to its device
        with evaluating(net, device="cuda"):
            assert net[0].weight.is_cuda
        assert net[0].weight.device.type == "cpu"
    with evaluating(nn.ReLU()):  # a model without parameters
        pass


def test_capture_outputs_can_replace_and_tells_in_place_changes():
    net = nn.Sequential(nn.Linear(2, 2), nn.ReLU(inplace=True), nn.Linear(2, 1))
    def doubled_last(name, output):
        return output * 2 if name == "2" else output

    with capture_outputs(net, ["0", "2"], replace=doubled_last) as store:
        out = net(torch.ones(1, 2))
    assert torch.equal(out, store["2"]) and called_output(store, "2") is store["2"]
    assert overwritten_in_place(store, "0")  # the in-place ReLU changed the recorded output
    assert not overwritten_in_place(store, "2")
    with capture_outputs(net, ["0"]) as store:
        pass
    with pytest.raises(ValidationError, match="layer '0' was not called in the model's forward pass"):
        called_output(store, "0")
    assert not net[0]._forward_hooks and not net[2]._forward_hooks


def test_unwrap_and_feature_map():
    net = nn.Linear(1, 1)
    assert unwrap(nn.DataParallel(net)) is net and unwrap(net) is net
    maps = torch.zeros(1, 2, 3, 3)
    assert feature_map(maps, "features.3", "Grad-CAM") is maps
    with pytest.raises(ValidationError, match=r"layer 'fc' must output a .* for Grad-CAM, got \(1, 2\)"):
        feature_map(torch.zeros(1, 2), "fc", "Grad-CAM")
    with pytest.raises(ValidationError, match="got tuple"):
        feature_map((maps,), "block", "SWA")
