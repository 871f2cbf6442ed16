"""Knowledge distillation losses: the paper's multi-label sigmoid KD and Hinton's softmax KD.

Multi-label (the paper, METHOD §3.2): each class is a two-way distribution ``(p, 1 - p)`` with
``p = sigmoid(z / T)``; the loss is ``T**2 / (B * C) * sum_{b,j} KL([q, 1-q] || [p + eps, 1-p + eps])``
(``q`` from the teacher, ``eps = 1e-7`` inside the log of the student's probabilities only).
Single-label: ``T**2 * KL(softmax(z_T / T) || softmax(z_S / T))`` averaged over the batch.
The training loss is ``alpha * KD + (1 - alpha) * task loss`` (T = 4, alpha = 0.9 in the paper).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from apkit.core.names import TASK_NAMES
from apkit.core.validation import check_choice, check_float, check_fraction, check_same_shape, check_tensor
from apkit.training import task_loss

#: The paper's distillation temperature and KD weight.
DEFAULT_TEMPERATURE = 4.0
DEFAULT_ALPHA = 0.9
#: Added inside the log of the student's probabilities (the paper's implementation does the same).
KD_EPS = 1e-7


def _check_logits(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> None:
    check_tensor(student_logits, "student_logits", ndim=2, floating=True)
    check_tensor(teacher_logits, "teacher_logits", ndim=2, floating=True)
    check_same_shape(student_logits, teacher_logits, "student_logits", "teacher_logits")


def multilabel_kd_loss(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, *, temperature: float = DEFAULT_TEMPERATURE,
    eps: float = KD_EPS,
) -> torch.Tensor:
    """The paper's multi-label distillation loss (per-class binary KL at temperature ``T``, times T**2).

    Examples
    --------
    >>> z = torch.tensor([[2.0, -1.0]])
    >>> float(multilabel_kd_loss(z, z)) < 1e-5  # only the eps inside the log is left
    True
    >>> round(float(multilabel_kd_loss(torch.zeros(1, 1), torch.tensor([[40.0]]), temperature=1.0)), 4)
    0.6931
    """
    _check_logits(student_logits, teacher_logits)
    t = check_float(temperature, "temperature", minimum=0.0, exclusive_minimum=True)
    p = torch.sigmoid(student_logits / t)
    q = torch.sigmoid(teacher_logits.detach() / t)
    student = torch.stack([p, 1 - p], dim=-1)
    teacher = torch.stack([q, 1 - q], dim=-1)
    # kl_div(log p_s, p_t) sums p_t * (log p_t - log p_s), with 0 * log 0 = 0
    kl = F.kl_div(torch.log(student + eps), teacher, reduction="sum")
    return kl * t * t / student_logits.numel()


def softmax_kd_loss(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, *, temperature: float = DEFAULT_TEMPERATURE
) -> torch.Tensor:
    """Hinton's distillation loss for single-label data: ``T**2 * KL(softmax(t/T) || softmax(s/T))``.

    Examples
    --------
    >>> z = torch.tensor([[1.0, 2.0, 3.0]])
    >>> float(softmax_kd_loss(z, z))
    0.0
    """
    _check_logits(student_logits, teacher_logits)
    t = check_float(temperature, "temperature", minimum=0.0, exclusive_minimum=True)
    log_p = F.log_softmax(student_logits / t, dim=1)
    q = F.softmax(teacher_logits.detach() / t, dim=1)
    return F.kl_div(log_p, q, reduction="batchmean") * t * t


class DistillationLoss(nn.Module):
    """``alpha * KD(student, teacher) + (1 - alpha) * task(student, labels)``.

    Parameters
    ----------
    task : {"multilabel", "multiclass"}
        Multi-label data uses the paper's sigmoid KD, single-label data softmax KD.
    temperature : float
        Distillation temperature T (4 in the paper).
    alpha : float
        Weight of the KD term (0.9 in the paper).

    Examples
    --------
    >>> kd = DistillationLoss("multilabel")
    >>> s, t, y = torch.zeros(2, 3), torch.zeros(2, 3), torch.ones(2, 3)
    >>> total, terms = kd(s, t, y)
    >>> round(float(total), 4), sorted(terms)  # 0.1 * log 2 (+ the eps term)
    (0.0693, ['kd', 'task'])
    """

    def __init__(self, task: str = "multilabel", *, temperature: float = DEFAULT_TEMPERATURE,
                 alpha: float = DEFAULT_ALPHA):
        super().__init__()
        self.task = check_choice(task, "task", TASK_NAMES)
        self.temperature = check_float(temperature, "temperature", minimum=0.0, exclusive_minimum=True)
        self.alpha = check_fraction(alpha, "alpha", allow_one=True)

    def extra_repr(self) -> str:
        return f"task={self.task!r}, temperature={self.temperature}, alpha={self.alpha}"

    def forward(self, student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                labels: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Return ``(total, {"kd": ..., "task": ...})``."""
        if self.task == "multilabel":
            kd = multilabel_kd_loss(student_logits, teacher_logits, temperature=self.temperature)
        else:
            kd = softmax_kd_loss(student_logits, teacher_logits, temperature=self.temperature)
        task = task_loss(student_logits, labels, task=self.task)
        total = self.alpha * kd + (1 - self.alpha) * task
        return total, {"kd": kd.detach(), "task": task.detach()}
