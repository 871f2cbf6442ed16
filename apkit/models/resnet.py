"""torchvision ResNets with apkit's layer defaults (no pretrained weights are downloaded)."""

from __future__ import annotations

from torch import nn
from torchvision import models as tv_models

from apkit.core.validation import check_int


def resnet(depth: int, num_classes: int) -> nn.Module:
    """torchvision ResNet-18/34/50 with ``num_classes`` outputs and random initialisation.

    Grad-CAM and matching both use ``layer4`` (the last residual stage, post-ReLU).
    """
    builders = {18: tv_models.resnet18, 34: tv_models.resnet34, 50: tv_models.resnet50}
    check_int(num_classes, "num_classes", minimum=1)
    model = builders[depth](weights=None, num_classes=num_classes)
    model.attribution_layer = "layer4"
    model.matching_layer = "layer4"
    return model
