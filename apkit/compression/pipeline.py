"""``compress_checkpoint``: compress a teacher checkpoint on a dataset spec, as ``apkit compress`` does."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from apkit.compression.api import CompressionRecord, compress
from apkit.models import load_checkpoint
from apkit.names import NAIVE
from apkit.training import datasets_for

__all__ = ["compress_checkpoint"]


def compress_checkpoint(
    teacher: str | os.PathLike,
    method: str = "kd",
    regularizer: str = NAIVE,
    *,
    out_dir: str | os.PathLike,
    data: str = "synthetic",
    settings: str = "quick",
    options: Mapping[str, Any] | None = None,
    train_samples: int | None = None,
    val_samples: int | None = None,
    device: str | torch.device | None = None,
    seed: int = 0,
    resume: bool = False,
    progress: bool = True,
) -> tuple[nn.Module, CompressionRecord]:
    """Load the teacher checkpoint, build its training data, and :func:`~apkit.compression.compress` it.

    Parameters
    ----------
    teacher : path
        An apkit checkpoint (``apkit train`` writes one).
    method, regularizer, settings, device, seed, resume, progress
        As in :func:`apkit.compression.compress`; ``settings`` names a settings profile.
    out_dir : path
        Receives ``model.pt``, ``record.json`` and the resumable training checkpoints.
    data : str
        A dataset spec (``"synthetic"``, ``"voc:ROOT"``, ...); synthetic images are rendered at the
        teacher's input size.
    options : mapping, optional
        Single settings that override the profile's (``{"epochs": 2, "weight": 10}``).
    train_samples, val_samples : int, optional
        Synthetic data only: the number of training and validation images.
    """
    teacher_model = load_checkpoint(teacher)
    splits = datasets_for(teacher_model, data, {"train": train_samples, "val": val_samples})
    return compress(teacher_model, method, regularizer, train_set=splits["train"], val_set=splits["val"],
                    settings=settings, out_dir=out_dir, resume=resume, device=device, seed=seed, progress=progress,
                    **dict(options or {}))
