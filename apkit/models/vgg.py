"""VGG networks with the paper's head: features, then Dropout + Linear on the flattened map.

There is no global pooling: the last feature map (C x s x s) is flattened channel-major
(index = c*s*s + h*s + w), as in the paper's VOC models.  Module indices of ``features``
match torchvision's ``vgg16_bn`` (for VGG16: ReLU after conv5_3 at ``features.42``, the
fifth max-pool at ``features.43``), so layer names carry over between widths and after
structured pruning.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from apkit.core.errors import ValidationError
from apkit.core.validation import check_int

# "M" is a 2x2 max-pool; a number is Conv3x3(pad 1) -> BatchNorm -> ReLU with that many channels.
CONFIGS: dict[str, tuple] = {
    "vgg11": (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    "vgg16": (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"),
    # A small VGG for the embedded synthetic data: the last conv block at S/8 (6x6 at 48x48), its pool at S/16.
    "vgg_small": (16, "M", 32, "M", 64, 64, "M", 128, 128, "M"),
}


def scale_config(config: Sequence, width_divisor: int) -> list:
    """Divide every channel count of ``config`` by ``width_divisor`` (the paper's VGG16/2, /4, /8)."""
    check_int(width_divisor, "width_divisor", minimum=1)
    return [v if v == "M" else max(1, v // width_divisor) for v in config]


def feature_size(config: Sequence, input_size: int) -> int:
    """Spatial size of the last feature map: each 2x2 max-pool floors the size by half."""
    size = input_size
    for v in config:
        if v == "M":
            size //= 2
    if size < 1:
        raise ValidationError(f"input_size must leave at least 1x1 after the max-pools, got {input_size}")
    return size


class VGG(nn.Module):
    """A VGG-BN network whose classifier is Dropout + Linear(C*s*s, num_classes).

    Parameters
    ----------
    config : sequence of int or "M"
        Channel counts and max-pools of the feature extractor.
    num_classes : int
        Number of output logits.
    input_size : int
        Side of the square input; fixes the classifier's input width.
    dropout : float
        Dropout probability before the linear layer.
    """

    def __init__(self, config: Sequence, num_classes: int, input_size: int, dropout: float = 0.5):
        super().__init__()
        check_int(num_classes, "num_classes", minimum=1)
        check_int(input_size, "input_size", minimum=1)
        layers: list[nn.Module] = []
        in_channels = 3
        for v in config:
            if v == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                layers += [nn.Conv2d(in_channels, v, 3, padding=1), nn.BatchNorm2d(v), nn.ReLU(inplace=True)]
                in_channels = v
        self.features = nn.Sequential(*layers)
        self.config = list(config)
        size = feature_size(config, input_size)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(in_channels * size * size, num_classes))
        # The ReLU after the last conv (Grad-CAM / EB layer) and the last max-pool (matching layer).
        last_relu = max(i for i, m in enumerate(self.features) if isinstance(m, nn.ReLU))
        last_pool = max(i for i, m in enumerate(self.features) if isinstance(m, nn.MaxPool2d))
        self.attribution_layer = f"features.{last_relu}"
        self.matching_layer = f"features.{last_pool}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))
