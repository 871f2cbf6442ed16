"""The compression training objective: task or distillation loss, plus attribution matching.

:class:`CompressionObjective` is an ``objective(model, images, labels) -> (loss, logits)`` for
:func:`apkit.training.fit`.  Per step it runs the teacher once (in eval mode, without gradient to
its weights) and the student once; the teacher's logits serve the distillation term and its
matching-layer map serves the regularizer, the student's logits serve the task/KD terms and its
map the regularizer.  With a :class:`~apkit.compression.teacher_cache.TeacherCache` the teacher's
part is read from the cache by the batch's dataset indices instead of computed.
"""

from __future__ import annotations

import torch
from torch import nn

from apkit.compression.distill import DistillationLoss
from apkit.compression.teacher_cache import TeacherCache
from apkit.core.errors import ValidationError
from apkit.core.modules import evaluating
from apkit.core.names import TASK_NAMES
from apkit.core.validation import check_choice
from apkit.regularizers import AttributionMatchingLoss
from apkit.training import task_loss


class CompressionObjective(nn.Module):
    """``loss = (KD or task loss) + regularizer``, with one teacher and one student forward per step.

    Parameters
    ----------
    teacher : torch.nn.Module, optional
        The original model; needed with ``distillation`` or ``regularizer``.  It is held (so that
        ``fit`` moves it to the device) but never trained or modified.
    task : {"multilabel", "multiclass"}
        The task loss (used when there is no ``distillation``).
    distillation : DistillationLoss, optional
        Distillation term (replaces the task loss by ``alpha * KD + (1 - alpha) * task``).
    regularizer : AttributionMatchingLoss, optional
        Attribution-matching term, added with its weight.
    cache : TeacherCache, optional
        The teacher's outputs of every training image (see :class:`TeacherCache`); used for the
        batches whose dataset indices ``fit`` passes.

    Attributes
    ----------
    last_terms : dict
        The detached terms of the last call (``task``, ``kd``, ``match``), which ``fit`` logs.

    Examples
    --------
    >>> from apkit import models
    >>> from apkit.regularizers import AttributionMatchingLoss
    >>> teacher = models.create("vgg_small", num_classes=3)
    >>> student = models.create("vgg_small", num_classes=3, width_divisor=2)
    >>> objective = CompressionObjective(teacher, regularizer=AttributionMatchingLoss("swa"))
    >>> loss, logits = objective(student, torch.randn(2, 3, 64, 64), torch.ones(2, 3))
    >>> sorted(objective.last_terms)
    ['match', 'task']
    """

    def __init__(
        self,
        teacher: nn.Module | None = None,
        *,
        task: str = "multilabel",
        distillation: DistillationLoss | None = None,
        regularizer: AttributionMatchingLoss | None = None,
        cache: TeacherCache | None = None,
    ):
        super().__init__()
        self.task = check_choice(task, "task", TASK_NAMES)
        if distillation is not None and not isinstance(distillation, DistillationLoss):
            raise ValidationError(f"distillation must be a DistillationLoss, got {type(distillation).__name__}")
        if regularizer is not None and not isinstance(regularizer, AttributionMatchingLoss):
            raise ValidationError(
                f"regularizer must be an AttributionMatchingLoss, got {type(regularizer).__name__}"
            )
        if (distillation is not None or regularizer is not None) and not isinstance(teacher, nn.Module):
            raise ValidationError("a teacher model is needed for distillation or attribution matching")
        if distillation is not None and distillation.task != self.task:
            raise ValidationError(f"distillation is for task {distillation.task!r} but the objective's is {task!r}")
        self.teacher = teacher
        self.distillation = distillation
        self.regularizer = regularizer
        self.cache = cache
        self.last_terms: dict[str, torch.Tensor] = {}

    @property
    def needs_indices(self) -> bool:
        """With a cache, :func:`apkit.training.fit` passes each batch's dataset indices."""
        return self.cache is not None

    def train(self, mode: bool = True):  # the teacher always runs in eval mode
        self.training = mode
        for child in (self.distillation, self.regularizer):
            if child is not None:
                child.train(mode)
        return self

    def forward(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                indices: torch.Tensor | None = None):
        terms: dict[str, torch.Tensor] = {}
        cached = self.cache.lookup(indices) if self.cache is not None and indices is not None else None
        teacher_logits = None if cached is None else cached.logits
        if self.regularizer is not None:
            taught = (self.regularizer.teacher_pass(self.teacher, images) if cached is None
                      else self.regularizer.teacher_map(cached))
            teacher_logits = taught.logits
            logits, student_map = self.regularizer.student_pass(model, images, taught.target)
            match = self.regularizer(student_map, taught.map)
        else:
            logits, match = model(images), None
        if self.distillation is not None:
            if teacher_logits is None:
                with torch.no_grad(), evaluating(self.teacher):
                    teacher_logits = self.teacher(images)
            loss, kd_terms = self.distillation(logits, teacher_logits, labels)
            terms.update(kd_terms)
        else:
            loss = task_loss(logits, labels, task=self.task)
            terms["task"] = loss.detach()
        if match is not None:
            loss = loss + match
            terms["match"] = match.detach()
        self.last_terms = terms
        return loss, logits
