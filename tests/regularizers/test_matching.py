"""Attribution-matching regularizers (EWA, SWA, SSWA) against closed forms and finite differences."""

import copy
import math

import pytest
import torch
from torch import nn

from apkit import models
from apkit.core.errors import UnknownNameError, ValidationError
from apkit.regularizers import (
    REGULARIZERS,
    AttributionMatchingLoss,
    ewa_map,
    matching_distance,
    swa_map,
)


class TinyNet(nn.Module):
    """conv -> ReLU -> max-pool -> Linear on the flattened (channel-major) map, like the paper's VGG."""

    def __init__(self, width=4, classes=3, size=8, dtype=torch.float32):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, width, 3, padding=1), nn.ReLU(), nn.Conv2d(width, width, 3, padding=1), nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Linear(width * (size // 2) ** 2, classes)
        self.matching_layer = "features.4"
        self.to(dtype)

    def forward(self, x):
        return self.classifier(torch.flatten(self.features(x), 1))


def _closed_form_swa(net, x, target, keep=None):
    """alpha_k = sum_hw W_c[k, h, w] for a linear head on the flattened map (METHOD 2.3)."""
    a = net.features(x)
    w = net.classifier.weight[target].view(x.shape[0], *a.shape[1:])
    alpha = w.sum((2, 3))
    if keep is not None:
        alpha = alpha * keep
    return torch.relu((alpha[:, :, None, None] * a).sum(1))


def test_matching_distance_is_two_minus_two_cos_over_positions():
    torch.manual_seed(0)
    a, b = torch.rand(4, 3, 5), torch.rand(4, 3, 5)
    cos = nn.functional.cosine_similarity(a.flatten(1), b.flatten(1), dim=1)
    assert torch.allclose(matching_distance(a, b), ((2 - 2 * cos) / 15).mean(), atol=1e-7)


def test_ewa_map_is_mean_of_squares():
    a = torch.tensor([[[[1.0, -2.0]], [[3.0, 0.0]]]])
    assert torch.equal(ewa_map(a), torch.tensor([[[5.0, 2.0]]]))


@pytest.mark.parametrize("kind", ["ewa", "swa"])
def test_loss_is_zero_for_a_copy_of_the_teacher(kind):
    torch.manual_seed(0)
    teacher = models.create("vgg_small", num_classes=4).eval()
    student = copy.deepcopy(teacher).eval()  # eval: dropout would enter the student's alpha
    reg = AttributionMatchingLoss(kind)
    x = torch.randn(3, 3, 64, 64)
    t = reg.teacher_pass(teacher, x)
    logits, smap = reg.student_pass(student, x, t.target)
    assert torch.allclose(logits, t.logits, atol=1e-5)
    assert float(reg(smap, t.map).detach()) < 1e-10
    assert float(matching_distance(smap, t.map).detach()) < 1e-12


def test_swa_equals_closed_form_for_a_linear_head():
    torch.manual_seed(1)
    teacher = TinyNet().eval()
    student = TinyNet(width=6).eval()
    x = torch.randn(5, 3, 8, 8)
    reg = AttributionMatchingLoss("swa")
    t = reg.teacher_pass(teacher, x)
    assert torch.equal(t.target, teacher(x).argmax(1))
    assert torch.allclose(t.map, _closed_form_swa(teacher, x, t.target), atol=1e-6)
    _, smap = reg.student_pass(student, x, t.target)
    assert torch.allclose(smap, _closed_form_swa(student, x, t.target), atol=1e-6)
    # The paper's weight 50 is scaled to the 4x4 map: 50 * 16 / 49 (apkit.regularizers.scaled_weight).
    expected = 50 * 16 / 49 * matching_distance(_closed_form_swa(student, x, t.target), t.map)
    assert torch.allclose(reg(smap, t.map), expected, atol=1e-7)


def test_swa_on_vgg_small_equals_closed_form():
    torch.manual_seed(2)
    net = models.create("vgg_small", num_classes=5).eval()
    x = torch.randn(2, 3, 64, 64)
    t = AttributionMatchingLoss("swa").teacher_pass(net, x)
    a = net.features(x)  # features.21 = last max-pool = the whole feature extractor
    w = net.classifier[1].weight[t.target].view(2, *a.shape[1:])
    expected = torch.relu((w.sum((2, 3))[:, :, None, None] * a).sum(1))
    assert t.map.shape == (2, 4, 4)
    assert torch.allclose(t.map, expected, atol=1e-5)


@pytest.mark.parametrize("kind", ["ewa", "swa", "sswa"])
def test_gradient_matches_finite_differences(kind):
    """Directional derivatives of the loss w.r.t. all student weights, float64 central differences."""
    torch.manual_seed(3)
    teacher = TinyNet(dtype=torch.float64).eval()
    student = TinyNet(width=3, dtype=torch.float64).eval()
    x = torch.randn(3, 3, 8, 8, dtype=torch.float64)
    reg = AttributionMatchingLoss(kind, weight=1.0)
    t = reg.teacher_pass(teacher, x)
    _, smap = reg.student_pass(student, x, t.target)
    reg(smap, t.map).backward()
    params = list(student.parameters())
    grads = [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in params]
    if kind != "ewa":  # the second-order path reaches the classifier through alpha
        assert student.classifier.weight.grad.abs().sum() > 0

    def loss_at(step, direction):
        with torch.no_grad():
            for p, d in zip(params, direction):
                p.add_(step * d)
        try:
            _, m = reg.student_pass(student, x, t.target)
            return float(reg(m, t.map).detach())
        finally:
            with torch.no_grad():
                for p, d in zip(params, direction):
                    p.sub_(step * d)

    for _ in range(4):
        direction = [torch.randn_like(p) for p in params]
        analytic = sum(float((g * d).sum()) for g, d in zip(grads, direction))
        eps = 1e-6
        numeric = (loss_at(eps, direction) - loss_at(-eps, direction)) / (2 * eps)
        assert numeric == pytest.approx(analytic, rel=1e-5, abs=1e-9)


def test_sswa_drops_floor_c_times_p_teacher_channels():
    torch.manual_seed(4)
    teacher = TinyNet(width=10).eval()
    x = torch.randn(4, 3, 8, 8)
    reg = AttributionMatchingLoss("sswa", drop=0.35, seed=7)
    t = reg.teacher_pass(teacher, x)
    assert t.dropped.numel() == math.floor(10 * 0.35) == 3
    assert t.dropped.unique().numel() == 3
    keep = torch.ones(10)
    keep[t.dropped] = 0
    assert torch.allclose(t.map, _closed_form_swa(teacher, x, t.target, keep), atol=1e-6)
    assert not torch.allclose(t.map, _closed_form_swa(teacher, x, t.target), atol=1e-6)
    # the draws are reproducible from the seed (every distributed rank agrees) and change per batch
    again = AttributionMatchingLoss("sswa", drop=0.35, seed=7)
    draws = [reg.teacher_pass(teacher, x).dropped for _ in range(3)]
    again_draws = [again.teacher_pass(teacher, x).dropped for _ in range(4)]
    assert torch.equal(again_draws[0], t.dropped)
    assert all(torch.equal(a, b) for a, b in zip(draws, again_draws[1:]))
    assert len({tuple(d.tolist()) for d in again_draws}) > 1
    assert AttributionMatchingLoss("sswa", drop=0.3).draw_dropped(512).numel() == 153
    reg.reset_generator()
    assert torch.equal(reg.teacher_pass(teacher, x).dropped, t.dropped)


def test_teacher_is_never_modified():
    torch.manual_seed(5)
    teacher = models.create("vgg_small", num_classes=4)
    teacher.train()  # even a teacher left in train mode is evaluated in eval mode and put back
    before = copy.deepcopy(teacher.state_dict())
    student = models.create("vgg_small", num_classes=4, width_divisor=2)
    x = torch.randn(4, 3, 64, 64)
    for kind in ("ewa", "swa", "sswa"):
        reg = AttributionMatchingLoss(kind)
        t = reg.teacher_pass(teacher, x)
        logits, smap = reg.student_pass(student, x, t.target)
        (reg(smap, t.map) + logits.sum()).backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert all(torch.equal(v, teacher.state_dict()[k]) for k, v in before.items())  # BN stats too
    assert all(m.training for m in teacher.modules())
    assert not any(m._forward_hooks or m._forward_pre_hooks or m._backward_hooks for m in teacher.modules())
    assert not any(m._forward_hooks for m in student.modules())
    eval_map = AttributionMatchingLoss("swa").teacher_pass(copy.deepcopy(teacher).eval(), x).map
    assert torch.allclose(AttributionMatchingLoss("swa").teacher_pass(teacher, x).map, eval_map)


def test_student_of_another_width_and_layer_names():
    torch.manual_seed(6)
    teacher = models.create("vgg_small", num_classes=3).eval()
    student = models.create("vgg11_bn", num_classes=3, input_size=64, width_divisor=8)
    reg = AttributionMatchingLoss("swa", teacher_layer="features.20", student_layer="features.27", resize=True)
    t = reg.teacher_pass(teacher, torch.randn(2, 3, 64, 64))
    assert t.map.shape == (2, 8, 8)
    _, smap = reg.student_pass(student, torch.randn(2, 3, 64, 64), t.target)
    assert smap.shape == (2, 4, 4)  # the ReLU after vgg11's last conv at 64x64 input
    resized = nn.functional.interpolate(smap[:, None], size=(8, 8), mode="bilinear", align_corners=False)[:, 0]
    assert torch.allclose(reg(smap, t.map), 50 * 64 / 49 * matching_distance(resized, t.map))  # an 8x8 map


def test_bad_inputs_raise_apkit_errors():
    torch.manual_seed(7)
    teacher = TinyNet().eval()
    x = torch.randn(2, 3, 8, 8)
    with pytest.raises(UnknownNameError, match="ewa, swa, sswa"):
        AttributionMatchingLoss("gradcam")
    with pytest.raises(ValidationError, match="only to regularizer='sswa'"):
        AttributionMatchingLoss("swa", drop=0.3)
    with pytest.raises(ValidationError, match="drop"):
        AttributionMatchingLoss("sswa", drop=1.5)
    with pytest.raises(ValidationError, match="weight"):
        AttributionMatchingLoss("ewa", weight=-1.0)
    with pytest.raises(ValidationError, match="resize=True"):
        AttributionMatchingLoss("ewa")(torch.rand(2, 4, 4), torch.rand(2, 2, 2))
    with pytest.raises(UnknownNameError, match="unknown layer"):
        AttributionMatchingLoss("swa", teacher_layer="features.99").teacher_pass(teacher, x)
    with pytest.raises(ValidationError, match="batch, channels, height, width"):
        AttributionMatchingLoss("swa", teacher_layer="classifier").teacher_pass(teacher, x)
    with pytest.raises(ValidationError, match="target classes"):
        AttributionMatchingLoss("swa").teacher_pass(teacher, x, target=torch.tensor([0, 5]))
    with pytest.raises(ValidationError, match="integer class"):
        AttributionMatchingLoss("swa").teacher_pass(teacher, x, target=torch.tensor([0.0, 1.0]))
    with pytest.raises(ValidationError, match="images"):
        AttributionMatchingLoss("swa").teacher_pass(teacher, x[0])
    inplace = nn.Sequential(nn.Conv2d(3, 2, 3), nn.ReLU(inplace=True), nn.Flatten(), nn.Linear(72, 2))
    for kind in ("ewa", "swa"):
        with pytest.raises(ValidationError, match="in place"):
            AttributionMatchingLoss(kind, teacher_layer="0").teacher_pass(inplace, x)
        with pytest.raises(ValidationError, match="in place"):
            AttributionMatchingLoss(kind, student_layer="0").student_pass(inplace, x, torch.tensor([0, 1]))
    assert not any(m._forward_hooks for m in inplace.modules())


def test_registry_builds_each_kind_with_paper_weights():
    assert REGULARIZERS.names() == ["ewa", "swa", "sswa"]
    built = {k: REGULARIZERS.get(k)() for k in REGULARIZERS.names()}
    assert {k: r.weight for k, r in built.items()} == {"ewa": 100.0, "swa": 50.0, "sswa": 50.0}
    assert built["sswa"].drop == 0.3
    assert swa_map(torch.ones(1, 1, 2, 2), -torch.ones(1, 1, 2, 2)).sum() == 0  # ReLU of a negative map


@pytest.mark.parametrize("name,options,size,side", [
    ("vgg_small", {"input_size": 32}, 32, 2), ("vgg_small", {"input_size": 48}, 48, 3),
    ("vgg_small", {"input_size": 64}, 64, 4), ("vgg16_bn", {"width_divisor": 8}, 227, 7), ("resnet18", {}, 224, 7),
])
@pytest.mark.parametrize("regularizer", ["ewa", "swa", "sswa"])
def test_the_paper_weight_is_scaled_to_the_matching_map(name, options, size, side, regularizer):
    # The default matching layer of each model, and the paper's weight times h * w / 49 there:
    # VGG16's pool5 (7x7 at 227) and ResNet-18's layer4 (7x7 at 224) keep the paper's weight exactly.
    torch.manual_seed(0)
    teacher = models.create(name, num_classes=3, **options).eval()
    student = models.create(name, num_classes=3, **options)
    reg = AttributionMatchingLoss(regularizer)
    x = torch.randn(2, 3, size, size)
    taught = reg.teacher_pass(teacher, x)
    assert taught.map.shape[-2:] == (side, side)
    expected_weight = {"ewa": 100.0, "swa": 50.0, "sswa": 50.0}[regularizer] * side * side / 49
    assert reg.effective_weight(side, side) == pytest.approx(expected_weight)
    if side == 7:
        assert reg.effective_weight(side, side) == reg.weight  # lambda exactly as in the supplement
    _, smap = reg.student_pass(student, x, taught.target)
    torch.testing.assert_close(reg(smap, taught.map), expected_weight * matching_distance(smap, taught.map))
    raw = AttributionMatchingLoss(regularizer, scale_weight=False)
    torch.testing.assert_close(raw(smap, taught.map), raw.weight * matching_distance(smap, taught.map))
