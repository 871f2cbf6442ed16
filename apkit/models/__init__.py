"""Model zoo: one registry of architectures, checkpoints, any model from files, and default layers.

:func:`resolve_model` turns a model spec (``PATH`` of an apkit checkpoint, or ``ARCH=PATH`` with
``ARCH`` ``torchvision:NAME``, ``package.module:factory`` or an apkit name) into a model; every
command that takes a model uses it.

Examples
--------
>>> from apkit import models
>>> net = models.create("vgg16_bn", num_classes=20, width_divisor=8)
>>> sum(p.numel() for p in net.parameters())
294364
>>> net.attribution_layer, net.matching_layer
('features.42', 'features.43')
"""

from __future__ import annotations

from apkit.models.checkpoint import (
    atomic_save,
    load_checkpoint,
    read_checkpoint,
    safe_load,
    save_checkpoint,
)
from apkit.models.inputs import recorded_input
from apkit.models.layers import default_layer, spatial_layers
from apkit.models.resnet import resnet
from apkit.models.resolve import ModelSpec, build_architecture, parse_model_spec, read_weights, resolve_model
from apkit.models.vgg import VGG
from apkit.models.zoo import MODELS, count_parameters, create

__all__ = [
    "MODELS", "VGG", "ModelSpec", "atomic_save", "build_architecture", "count_parameters",
    "create", "default_layer", "load_checkpoint", "parse_model_spec", "read_checkpoint",
    "read_weights", "recorded_input", "resnet", "resolve_model", "safe_load", "save_checkpoint", "spatial_layers",
]
