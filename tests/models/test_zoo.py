"""The model registry: create, its refusals, and count_parameters."""

import pytest
import torch
from torch import nn

from apkit import models
from apkit.core.errors import UnknownNameError, ValidationError
from apkit.models import count_parameters


def test_unknown_model_and_bad_options():
    with pytest.raises(UnknownNameError, match="vgg16_bn"):
        models.create("vgg17", num_classes=3)
    with pytest.raises(ValidationError):
        models.create("resnet18", num_classes=3, width_divisor=2)
    with pytest.raises(ValidationError):
        models.create("vgg_small", num_classes=0)


def test_create_records_its_recipe_and_counts_parameters():
    model = models.create("vgg_small", num_classes=8, width_divisor=2)
    assert model.apkit_config == {"name": "vgg_small", "num_classes": 8, "options": {"width_divisor": 2}}
    assert models.MODELS.names() == ["vgg16_bn", "vgg11_bn", "vgg_small", "resnet18", "resnet34", "resnet50"]
    with pytest.raises(ValidationError, match="does not accept options"):
        models.create("vgg_small", num_classes=8, colour=True)


def test_count_parameters_all_and_nonzero():
    net = nn.Linear(3, 2)  # 6 weights + 2 biases
    with torch.no_grad():
        net.weight[0] = 0.0
    assert count_parameters(net) == 8 and count_parameters(net, nonzero=True) == 5
