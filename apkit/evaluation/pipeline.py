"""``audit_checkpoints``: audit compressed checkpoints against their original on a dataset spec (``apkit audit``)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from apkit.data import check_synthetic_only, spec_name
from apkit.evaluation.audit import AuditReport, audit
from apkit.models import load_checkpoint
from apkit.training import datasets_for

__all__ = ["audit_checkpoints", "model_name"]


def model_name(path: str | os.PathLike) -> str:
    """The name a checkpoint goes by in a report: ``runs/kd-swa/model.pt`` -> ``kd-swa``."""
    p = Path(path)
    return p.parent.name if p.stem == "model" and p.parent.name else p.stem


def audit_checkpoints(
    teacher: str | os.PathLike,
    students: Sequence[str | os.PathLike],
    *,
    data: str = "synthetic",
    split: str = "seg",
    samples: int | None = None,
    protocol: str | None = None,
    **options: Any,
) -> AuditReport:
    """Load the checkpoints, build the segmentation split of ``data``, and :func:`~apkit.evaluation.audit`.

    Parameters
    ----------
    teacher : path
        The original model's checkpoint.
    students : sequence of paths
        The compressed models' checkpoints; each is named after its file (:func:`model_name`).
    data, split : str
        A dataset spec and its split with masks; synthetic images are rendered at the teacher's
        input size.
    protocol : {"voc", "imagenet"}, optional
        Default: "imagenet" for ImageNet data, else "voc".
    samples : int, optional
        Synthetic data only: the number of evaluation images.
    **options
        Keyword arguments of :func:`apkit.evaluation.audit`: ``attribution_methods``,
        ``tolerances``, ``batch_size``, ``device``, ``progress``.
    """
    check_synthetic_only(data, samples=samples)
    teacher_model = load_checkpoint(teacher)
    dataset = datasets_for(teacher_model, data, {split: samples})[split]
    named = {model_name(p): load_checkpoint(p, expect_num_classes=dataset.num_classes) for p in students}
    if protocol is None:
        protocol = "imagenet" if spec_name(data).startswith("imagenet") else "voc"
    return audit(teacher_model, named, dataset, protocol=protocol, **options)
