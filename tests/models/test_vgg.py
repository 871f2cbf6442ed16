"""apkit's VGGs: the paper's parameter counts, and the layers and map sizes of VGG16-BN and the small VGG."""

import pytest
import torch
from torch import nn

from apkit import models
from apkit.core.modules import capture_outputs, get_layer
from apkit.models import count_parameters


@pytest.mark.parametrize(
    "width_divisor, expected", [(1, 15_224_916), (2, 3_935_284), (4, 1_048_356), (8, 294_364)]
)
def test_vgg16_bn_parameter_counts_match_the_paper(width_divisor, expected):
    model = models.create("vgg16_bn", num_classes=20, width_divisor=width_divisor)
    assert count_parameters(model) == expected


def test_vgg16_layers_and_shapes():
    model = models.create("vgg16_bn", num_classes=20, width_divisor=8).eval()
    assert isinstance(get_layer(model, "features.42"), nn.ReLU)
    assert isinstance(get_layer(model, "features.43"), nn.MaxPool2d)
    with capture_outputs(model, ["features.42", "features.43"]) as acts:
        logits = model(torch.zeros(1, 3, 227, 227))
    # 227 -> 113 -> 56 -> 28 -> 14 at conv5_3, 7 after pool5; VGG16/8 has 64 channels there.
    assert acts["features.42"].shape == (1, 64, 14, 14) and acts["features.43"].shape == (1, 64, 7, 7)
    assert logits.shape == (1, 20)
    assert not model.features[42]._forward_hooks  # hooks removed


def test_vgg_small_layers():
    model = models.create("vgg_small", num_classes=8)
    assert (model.attribution_layer, model.matching_layer) == ("features.20", "features.21")
    with capture_outputs(model, [model.attribution_layer, model.matching_layer]) as acts:
        model.eval()(torch.zeros(2, 3, 64, 64))
    assert acts["features.20"].shape[-2:] == (8, 8) and acts["features.21"].shape[-2:] == (4, 4)
