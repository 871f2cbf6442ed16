"""Distillation: the paper's multi-label KD formula, softmax KD, students, and the training objective."""

import copy
import math

import pytest
import torch

from apkit import models
from apkit.compression import (
    CompressionObjective,
    DistillationLoss,
    default_settings,
    make_student,
    multilabel_kd_loss,
    softmax_kd_loss,
)
from apkit.core.errors import UnknownNameError, ValidationError
from apkit.regularizers import AttributionMatchingLoss


def test_multilabel_kd_equals_the_papers_formula_by_hand():
    s = [[0.3, -2.0, 5.0], [1.5, 0.0, -0.7]]
    t = [[2.0, -1.0, 3.0], [-4.0, 0.5, 0.2]]
    temperature, eps = 4.0, 1e-7
    total = 0.0
    for srow, trow in zip(s, t):
        for sv, tv in zip(srow, trow):
            p, q = 1 / (1 + math.exp(-sv / temperature)), 1 / (1 + math.exp(-tv / temperature))
            total += q * (math.log(q) - math.log(p + eps)) + (1 - q) * (math.log(1 - q) - math.log(1 - p + eps))
    expected = temperature ** 2 * total / 6
    got = multilabel_kd_loss(torch.tensor(s, dtype=torch.float64), torch.tensor(t, dtype=torch.float64))
    assert float(got) == pytest.approx(expected, rel=1e-12)


def test_multilabel_kd_gradient_is_t_times_p_minus_q():
    torch.manual_seed(0)
    s = torch.randn(4, 5, dtype=torch.float64, requires_grad=True)
    t = torch.randn(4, 5, dtype=torch.float64)
    multilabel_kd_loss(s, t, temperature=4.0, eps=0.0).backward()
    expected = 4.0 * (torch.sigmoid(s / 4) - torch.sigmoid(t / 4)) / 20
    assert torch.allclose(s.grad, expected, atol=1e-12)


def test_softmax_kd_by_hand():
    s, t, temperature = [1.0, 2.0, -1.0], [0.5, -0.5, 3.0], 2.0

    def softmax(v):
        e = [math.exp(x / temperature) for x in v]
        return [x / sum(e) for x in e]

    p, q = softmax(s), softmax(t)
    expected = temperature ** 2 * sum(qi * math.log(qi / pi) for pi, qi in zip(p, q))
    got = softmax_kd_loss(torch.tensor([s, s], dtype=torch.float64), torch.tensor([t, t], dtype=torch.float64),
                          temperature=temperature)
    assert float(got) == pytest.approx(expected, rel=1e-12)


def test_distillation_loss_mixes_kd_and_task_with_alpha():
    torch.manual_seed(1)
    s, t = torch.randn(3, 4), torch.randn(3, 4)
    y = (torch.rand(3, 4) > 0.5).float()
    total, terms = DistillationLoss("multilabel", temperature=4.0, alpha=0.9)(s, t, y)
    task = torch.nn.functional.multilabel_soft_margin_loss(s, y)
    assert torch.allclose(total, 0.9 * multilabel_kd_loss(s, t) + 0.1 * task)
    assert torch.allclose(terms["task"], task)
    single, _ = DistillationLoss("multiclass", alpha=0.5)(s, t, torch.tensor([0, 3, 1]))
    ce = torch.nn.functional.cross_entropy(s, torch.tensor([0, 3, 1]))
    assert torch.allclose(single, 0.5 * softmax_kd_loss(s, t) + 0.5 * ce)


def test_students_have_the_papers_sizes():
    teacher = models.create("vgg16_bn", num_classes=20, width_divisor=2)  # the /2 teacher is cheaper to build
    assert models.count_parameters(teacher) == 3_935_284
    assert models.count_parameters(make_student(teacher, width_divisor=4)) == 1_048_356
    assert models.count_parameters(make_student(teacher, width_divisor=8)) == 294_364
    other = make_student(teacher, model="vgg11_bn", width_divisor=8, input_size=64)
    assert other.apkit_config == {"name": "vgg11_bn", "num_classes": 20,
                                  "options": {"input_size": 64, "width_divisor": 8}}
    with pytest.raises(ValidationError, match="architecture is unknown"):
        make_student(torch.nn.Linear(2, 2))
    with pytest.raises(UnknownNameError):
        make_student(teacher, model="vgg99")


def test_paper_kd_settings_follow_the_paper_with_momentum_option():
    paper = default_settings("kd", "paper")
    train, kd = paper.train, paper.method_settings
    assert (train.epochs, train.lr, train.milestones, train.momentum) == (350, 0.1, (150, 200, 250), 0.9)
    assert (kd.width_divisor, kd.temperature, kd.alpha) == (8, 4.0, 0.9)
    assert default_settings("kd", "paper", momentum=0.0).train.momentum == 0.0  # the reference code's choice


def test_objective_uses_one_teacher_forward_for_kd_and_matching():
    torch.manual_seed(2)
    teacher = models.create("vgg_small", num_classes=4, input_size=32).eval()
    student = make_student(teacher, width_divisor=2).eval()
    before = copy.deepcopy(teacher.state_dict())
    calls = []
    handle = teacher.register_forward_pre_hook(lambda *_: calls.append(1))
    reg = AttributionMatchingLoss("swa")
    objective = CompressionObjective(teacher, distillation=DistillationLoss("multilabel"), regularizer=reg)
    x, y = torch.randn(3, 3, 32, 32), (torch.rand(3, 4) > 0.5).float()
    try:
        loss, logits = objective(student, x, y)
    finally:
        handle.remove()
    assert len(calls) == 1
    with torch.no_grad():
        t_logits = teacher(x)
    taught = AttributionMatchingLoss("swa").teacher_pass(teacher, x)
    _, smap = AttributionMatchingLoss("swa").student_pass(student, x, taught.target)
    task = torch.nn.functional.multilabel_soft_margin_loss(logits, y)
    expected = 0.9 * multilabel_kd_loss(logits, t_logits) + 0.1 * task + reg(smap, taught.map)
    assert torch.allclose(loss, expected, atol=1e-6)
    assert sorted(objective.last_terms) == ["kd", "match", "task"]
    loss.backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert all(torch.equal(v, teacher.state_dict()[k]) for k, v in before.items())
    objective.train()
    assert not teacher.training  # the objective never switches the teacher to train mode
    with pytest.raises(ValidationError, match="teacher model is needed"):
        CompressionObjective(None, regularizer=reg)
    with pytest.raises(ValidationError, match="AttributionMatchingLoss"):
        CompressionObjective(teacher, regularizer="swa")
