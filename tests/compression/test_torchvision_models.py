"""Any torchvision CNN compresses: structured pruning with SWA through the dependency graph, refusals, the
matching layers (the audit's default, recorded, a warning under 4x4), KD into any student, AdamW."""

import warnings

import pytest
import torch
import torchvision
from helpers import calibrate_batchnorm
from torch import nn
from torch.utils.data import TensorDataset

from apkit.compression import compress, prune_structured
from apkit.compression.layers import matching_layers
from apkit.core.errors import ValidationError
from apkit.models import count_parameters, default_layer

pytestmark = pytest.mark.usefixtures("one_thread")

RATIO = 0.5


def _data(n=6, size=32, classes=3, seed=0):
    """Plain PyTorch data: images and integer labels, no apkit attributes."""
    g = torch.Generator().manual_seed(seed)
    return TensorDataset(torch.randn(n, 3, size, size, generator=g), torch.arange(n) % classes)


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2", "mobilenet_v3_small", "efficientnet_b0"])
def test_structured_swa_prunes_torchvision_cnns_by_the_ratio_asked(name):
    torch.manual_seed(0)
    teacher = torchvision.models.get_model(name, weights=None, num_classes=3)
    calibrate_batchnorm(teacher, size=32)
    train = _data()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # coarse maps at 32 px are expected here
        model, record = compress(teacher, "structured", "swa", train_set=train, val_set=train, epochs=1,
                                 batch_size=6, pruning_ratio=RATIO, device="cpu", progress=False)
    before, after = count_parameters(teacher), count_parameters(model)
    # Every pruned conv keeps half its filters and reads half its input channels: (1 - r)^2 of the weights.
    # The classifier's outputs and the first conv's inputs are kept, so the share lies a little above.
    assert (1 - RATIO) ** 2 <= after / before <= (1 - RATIO) ** 2 + 0.04
    assert record.params == after and record.teacher["params"] == before
    x = torch.randn(2, 3, 32, 32)
    assert model(x).shape == teacher.eval()(x).shape == (2, 3)
    assert record.task == "multiclass" and record.val["num_images"] == 6
    assert record.layers["teacher"] == default_layer(teacher, example_inputs=x[:1])
    assert record.input["image_size"] == 32


def test_a_conv_classifier_keeps_its_outputs():
    """SqueezeNet's classifier is a 1x1 conv with one filter per class: it is left whole."""
    net = torchvision.models.squeezenet1_1(weights=None, num_classes=3).eval()
    pruned = prune_structured(net, example_inputs=torch.randn(1, 3, 64, 64), pruning_ratio=RATIO)
    assert pruned(torch.randn(2, 3, 64, 64)).shape == (2, 3)
    assert count_parameters(pruned) < 0.3 * count_parameters(net)


@pytest.mark.parametrize("name,why", [("shufflenet_v2_x0_5", "channel shuffle"), ("vit_b_16", "attention heads")])
def test_architectures_the_graph_cannot_slice_are_refused_before_any_work(name, why):
    net = torchvision.models.get_model(name, weights=None, num_classes=3)
    with pytest.raises(ValidationError, match=f"does not support .*{why}.*unstructured.*kd"):
        prune_structured(net, example_inputs=torch.randn(1, 3, 224, 224), pruning_ratio=RATIO)


def test_matching_layers_default_to_the_audits_and_warn_under_4x4():
    net = torchvision.models.resnet18(weights=None, num_classes=3)
    with pytest.warns(UserWarning, match=r"'layer4' is 2x2 at 64 px.*'layer3' has a 4x4 map"):
        layers = matching_layers(net, net, torch.zeros(1, 3, 64, 64))
    assert layers["teacher"] == layers["student"] == "layer4" and layers["teacher_map"] == [2, 2]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning for a 4x4 map
        layers = matching_layers(net, net, torch.zeros(1, 3, 64, 64), teacher_layer="layer3")
    assert layers["student"] == "layer3" and layers["student_map"] == [4, 4] and layers["warnings"] == []


def test_kd_into_another_architecture_with_adamw_records_its_layers():
    torch.manual_seed(0)
    teacher = torchvision.models.resnet18(weights=None, num_classes=3)
    student = torchvision.models.mobilenet_v3_small(weights=None, num_classes=3)
    train = _data(size=64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        model, record = compress(teacher, "kd", "swa", train_set=train, epochs=1, batch_size=6, lr=1e-3,
                                 optimizer="adamw", student=student, device="cpu", progress=False,
                                 teacher_layer="layer3")
    assert isinstance(model, type(student)) and record.student == "MobileNetV3"
    assert record.settings["optimizer"] == "adamw"
    assert record.layers["teacher"] == "layer3" and record.layers["teacher_map"] == [4, 4]
    # The student's default layer is 2x2 at 64 px: its last 4x4 map, the teacher's size, is matched instead
    assert record.layers["student_map"] == [4, 4]
    assert default_layer(student, "matching", torch.zeros(1, 3, 64, 64)) != record.layers["student"]


def test_unstructured_pruning_reaches_linear_layers_when_asked():
    torch.manual_seed(0)
    teacher = torchvision.models.mobilenet_v3_small(weights=None, num_classes=3)
    train = _data()
    model, record = compress(teacher, "unstructured", "none", train_set=train, epochs=1, batch_size=6, lr=1e-9,
                             amount=0.5, layers=["conv", "linear"], device="cpu", progress=False)
    weights = [m.weight for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    zeros = sum(int((w == 0).sum()) for w in weights)
    total = sum(w.numel() for w in weights)
    assert zeros / total == pytest.approx(0.5, abs=1e-4)  # one global threshold over conv and linear weights
    assert int((model.classifier[-1].weight == 0).sum()) > 0
    with pytest.raises(ValidationError, match="conv, linear"):
        compress(teacher, "unstructured", "none", train_set=train, layers=["dense"], device="cpu")
