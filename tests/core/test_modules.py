"""Module mechanics: layers by dotted name, eval mode restored, output capture that removes its hooks."""

import pytest

from apkit import models
from apkit.core.errors import UnknownNameError, ValidationError
from apkit.core.modules import capture_outputs, get_layer


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
