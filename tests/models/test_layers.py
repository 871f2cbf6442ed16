"""Default layers: the ones apkit's models name, and the probe's choice for a model that names none."""

import torch
from torch import nn

from apkit import models
from apkit.models import default_layer


def test_default_layers_of_apkit_models():
    model = models.create("vgg16_bn", num_classes=20, width_divisor=8).eval()
    assert default_layer(model) == "features.42" and default_layer(model, "matching") == "features.43"
    resnet = models.create("resnet18", num_classes=3)
    assert default_layer(resnet) == "layer4" and default_layer(resnet, "matching") == "layer4"


def test_probe_takes_the_last_map_before_global_pooling():
    # conv -> ReLU -> max-pool -> conv -> BatchNorm -> ReLU -> global pool: the map of the second block,
    # named by its last computing layer (the ReLU that overwrote the BatchNorm's output in place).
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(4, 4, 3, padding=1),
                        nn.BatchNorm2d(4), nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                        nn.Linear(4, 2))
    assert default_layer(net, example_inputs=torch.zeros(1, 3, 16, 16)) == "5"
