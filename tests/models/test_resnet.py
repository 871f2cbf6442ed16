"""apkit's ResNets: torchvision's architecture with apkit's layer names and class count."""

import pytest
import torch
from torch import nn

from apkit import models
from apkit.core.errors import ValidationError
from apkit.models import count_parameters, resnet


def test_resnet_names_its_layers_and_has_the_requested_classes():
    model = resnet(18, 5)
    assert (model.attribution_layer, model.matching_layer) == ("layer4", "layer4")
    assert isinstance(model.fc, nn.Linear) and model.fc.out_features == 5
    assert model.eval()(torch.zeros(1, 3, 32, 32)).shape == (1, 5)
    # torchvision's ResNet-18 with a 5-class head: 11,176,512 + 512 * 5 + 5 parameters.
    assert count_parameters(model) == 11_176_512 + 512 * 5 + 5
    with pytest.raises(ValidationError, match="num_classes must be >= 1"):
        resnet(18, 0)
    assert models.create("resnet34", num_classes=3).apkit_config["name"] == "resnet34"
