"""Models shared by the attribution tests: a tiny float64 VGG, VGG16-BN and ResNet-18 with calibrated BatchNorms."""

import copy

import pytest
import torch
from helpers import calibrate_batchnorm
from torch import nn
from zennit.canonizers import SequentialMergeBatchNorm

from apkit import models
from apkit.models import VGG


@pytest.fixture(scope="module")
def vgg16():
    torch.manual_seed(0)
    return calibrate_batchnorm(models.create("vgg16_bn", num_classes=10, input_size=64))


@pytest.fixture(scope="module")
def resnet18():
    torch.manual_seed(0)
    return calibrate_batchnorm(models.create("resnet18", num_classes=10))


@pytest.fixture(scope="module")
def vgg16_merged(vgg16):
    """VGG16-BN with every BatchNorm merged into its convolution by zennit and left as an exact identity.

    Max-pooling picks one of two nearly equal values (e.g. the constant output of a channel whose inputs
    are all zero), and folding BatchNorm changes the last bits of the activations; with the merge done
    once, zennit and apkit compute bit-identical activations and break such ties the same way.
    """
    merged = copy.deepcopy(vgg16)
    SequentialMergeBatchNorm().apply(merged)  # the handles are dropped: the merge stays
    for module in merged.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.eps = 0.0
    return merged


@pytest.fixture(scope="module")
def tiny():
    """A small VGG (conv, BatchNorm, ReLU, max-pool, dropout, linear), in float64 so that batched and
    per-pair results are compared for the algorithm, not for float32 rounding."""
    torch.manual_seed(0)
    model = VGG((8, "M", 16, "M"), num_classes=20, input_size=16).double().eval()
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.3, 0.3)
            module.running_var.uniform_(0.5, 1.5)
    return model
