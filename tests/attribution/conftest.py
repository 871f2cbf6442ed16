"""Fixtures of the rule methods' tests: VGG16-BN and ResNet-18 with calibrated BatchNorms."""

import copy

import pytest
import torch
from helpers import calibrate_batchnorm
from torch import nn
from zennit.canonizers import SequentialMergeBatchNorm

from apkit import models


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
