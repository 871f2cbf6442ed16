"""The teacher's outputs for every training image, computed once: what a compression needs of the teacher.

Distillation needs the teacher's logits of every batch, and attribution matching its matching-layer
activations and channel weights.  When a training set hands out the same image for an index at
every epoch (it has no random augmentation; it says so with ``deterministic = True``, as the
embedded synthetic data does), these do not change from epoch to epoch: :class:`TeacherCache`
computes them in one pass and every training step reads its batch's rows, so the teacher runs
once per image instead of once per image per epoch.  SSWA still draws the channels it leaves out
per batch, so a cached run draws what an uncached one would.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from apkit.core.modules import evaluating
from apkit.regularizers import AttributionMatchingLoss, TeacherEvidence

__all__ = ["TeacherCache", "can_cache"]

#: The most memory a cache may take; larger training sets recompute the teacher every step.
MAX_CACHE_BYTES = 2 << 30


def can_cache(dataset: Any) -> bool:
    """True when ``dataset`` declares that its items never change (no random augmentation)."""
    return bool(getattr(dataset, "deterministic", False))


class TeacherCache:
    """The teacher's logits (and, with a regularizer, its matching evidence) for every image of a dataset.

    Parameters
    ----------
    evidence : TeacherEvidence
        One row per image of the dataset, in dataset order (``activations`` may be empty when only
        the logits are needed).
    """

    def __init__(self, evidence: TeacherEvidence):
        self.evidence = evidence

    def __len__(self) -> int:
        return len(self.evidence.logits)

    @classmethod
    def build(cls, teacher: nn.Module, dataset: Any, *, regularizer: AttributionMatchingLoss | None,
              device: torch.device, batch_size: int = 128, channels_last: bool = False,
              progress: bool = False) -> TeacherCache | None:
        """Run the teacher over ``dataset`` once; ``None`` when the cache would not fit in memory.

        ``channels_last`` feeds the teacher the memory format the training steps will use, so the
        cached values are the ones a step would compute.
        """
        loader = DataLoader(dataset, batch_size=batch_size, shuffle=False)
        parts: list[TeacherEvidence] = []
        size = 0
        with evaluating(teacher):
            for batch in tqdm(loader, desc="teacher outputs", leave=False, disable=not progress):
                images = batch[0].to(device)
                if channels_last:
                    images = images.contiguous(memory_format=torch.channels_last)
                parts.append(_evidence(teacher, images, regularizer))
                size += sum(t.numel() * t.element_size() for t in (parts[-1].logits, parts[-1].activations))
                if size * math.ceil(len(dataset) / (len(parts) * batch_size)) > MAX_CACHE_BYTES:
                    return None
        alphas = [p.alpha for p in parts]
        return cls(TeacherEvidence(
            logits=torch.cat([p.logits for p in parts]), target=torch.cat([p.target for p in parts]),
            activations=torch.cat([p.activations for p in parts]),
            alpha=None if alphas[0] is None else torch.cat(alphas),
        ))

    def lookup(self, indices: torch.Tensor) -> TeacherEvidence:
        """The rows of the dataset indices ``indices`` (on the cache's device)."""
        return self.evidence.select(indices.to(self.evidence.logits.device).long())


def _evidence(teacher: nn.Module, images: torch.Tensor, regularizer: AttributionMatchingLoss | None) -> TeacherEvidence:
    if regularizer is not None:
        return regularizer.teacher_evidence(teacher, images)
    with torch.no_grad():
        logits = teacher(images).detach()
    return TeacherEvidence(logits, logits.argmax(1), logits.new_empty(len(logits), 0, 1, 1))
