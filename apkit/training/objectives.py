"""Training objectives: callables ``objective(model, images, labels) -> (loss, logits)``.

:func:`apkit.training.fit` minimises whatever objective it is given.  The default is the task
loss; compression passes distillation and attribution-matching objectives.  An objective may
set an attribute ``last_terms`` (a dict of name -> scalar tensor or float) after each call; the
training loop averages those terms over the epoch and logs them next to the total loss.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from apkit.core.errors import ValidationError
from apkit.core.names import TASK_NAMES
from apkit.core.validation import check_choice

__all__ = ["TaskObjective", "class_targets", "task_loss"]


def class_targets(labels: torch.Tensor) -> torch.Tensor:
    """Class indices for single-label tasks: one-hot ``(N, C)`` labels -> argmax; ``(N,)`` indices pass.

    Examples
    --------
    >>> import torch
    >>> class_targets(torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]]))
    tensor([1, 0])
    """
    if labels.dim() == 2:
        return labels.argmax(dim=1)
    if labels.dim() == 1 and not labels.is_floating_point():
        return labels.long()
    raise ValidationError(
        f"single-label targets must be one-hot (N, C) or class indices (N,), got {labels.dtype} "
        f"of shape {tuple(labels.shape)}"
    )


def task_loss(logits: torch.Tensor, labels: torch.Tensor, *, task: str, reduction: str = "mean") -> torch.Tensor:
    """The task loss: multi-label soft margin (per-class sigmoid BCE, mean over classes) or cross-entropy.

    Parameters
    ----------
    logits : torch.Tensor
        ``(N, C)`` model outputs.
    labels : torch.Tensor
        ``(N, C)`` multi-hot (``"multilabel"``) or one-hot / ``(N,)`` indices (``"multiclass"``).
    task : {"multilabel", "multiclass"}
        Which loss.
    reduction : {"mean", "sum", "none"}
        Over images; ``"none"`` gives one value per image.

    Examples
    --------
    >>> import torch
    >>> logits = torch.zeros(2, 4)
    >>> round(task_loss(logits, torch.ones(2, 4), task="multilabel").item(), 4)  # log 2
    0.6931
    >>> round(task_loss(logits, torch.tensor([0, 3]), task="multiclass").item(), 4)  # log 4
    1.3863
    """
    check_choice(task, "task", TASK_NAMES)
    check_choice(reduction, "reduction", ("mean", "sum", "none"))
    if task == "multilabel":
        if labels.shape != logits.shape:
            raise ValidationError(
                f"multi-label targets must have the shape of the logits {tuple(logits.shape)}, "
                f"got {tuple(labels.shape)}"
            )
        return F.multilabel_soft_margin_loss(logits, labels.to(logits.dtype), reduction=reduction)
    return F.cross_entropy(logits, class_targets(labels), reduction=reduction)


class TaskObjective(nn.Module):
    """The default objective: run the model, return ``(task_loss, logits)``.

    Parameters
    ----------
    task : {"multilabel", "multiclass"}
        Which task loss (see :func:`task_loss`).

    Examples
    --------
    >>> import torch
    >>> objective = TaskObjective("multilabel")
    >>> loss, logits = objective(torch.nn.Linear(3, 2), torch.zeros(4, 3), torch.zeros(4, 2))
    >>> logits.shape, sorted(objective.last_terms)
    (torch.Size([4, 2]), ['task'])
    """

    def __init__(self, task: str = "multilabel"):
        super().__init__()
        self.task = check_choice(task, "task", TASK_NAMES)
        self.last_terms: dict[str, torch.Tensor] = {}

    def forward(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor):
        logits = model(images)
        loss = task_loss(logits, labels, task=self.task)
        self.last_terms = {"task": loss.detach()}
        return loss, logits
