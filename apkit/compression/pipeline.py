"""``compress_checkpoint``: compress a teacher (any model spec) on a dataset spec, as ``apkit compress`` does."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from typing import Any

from torch import nn

from apkit.compression.api import CompressionRecord, RunOptions, check_compression_out_dir, compress
from apkit.compression.quantization import check_method_regularizer
from apkit.compression.settings import check_regularizer_settings, resolve_settings
from apkit.core.errors import ValidationError, unknown_name
from apkit.core.names import COMPRESSION_METHOD_NAMES, NAIVE, REGULARIZER_CHOICES
from apkit.core.validation import check_choice
from apkit.models import resolve_model
from apkit.training import datasets_for

__all__ = ["compress_checkpoint"]

# The options of a compression run compress_checkpoint passes on (out_dir is its own parameter).
_RUN_KEYS = tuple(f.name for f in dataclasses.fields(RunOptions) if f.name != "out_dir")


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
    num_classes: int | None = None,
    **run: Any,
) -> tuple[nn.Module, CompressionRecord]:
    """Load the teacher, build its training data, and :func:`~apkit.compression.compress` it.

    Parameters
    ----------
    teacher : str or path
        A model spec (:func:`apkit.models.resolve_model`): an apkit checkpoint (``apkit train``
        writes one), or ``ARCH=PATH`` such as ``torchvision:resnet18=weights.pt`` (a plain
        state dict or ``.safetensors`` file).
    method, regularizer, settings
        As in :func:`apkit.compression.compress`; ``settings`` names a settings profile.
    out_dir : path
        Receives ``model.pt`` (``model_state.pt``, a plain state dict, for a teacher that apkit did
        not build), ``record.json`` and the resumable training checkpoints.
    data : str
        A dataset spec (``"synthetic"``, ``"voc:ROOT"``, ...); synthetic images are rendered at the
        teacher's input size.
    options : mapping, optional
        Single settings that override the profile's (``{"epochs": 2, "weight": 10}``).
    train_samples, val_samples : int, optional
        Synthetic data only: the number of training and validation images.
    num_classes : int, optional
        The teacher's class count, needed for ``torchvision:`` and apkit names in ``ARCH=PATH``;
        it must be the data's.
    **run
        ``device``, ``seed``, ``resume``, ``overwrite``, ``progress``: as in
        :func:`apkit.compression.compress` (:class:`apkit.compression.api.RunOptions`).
    """
    # Everything that needs neither the teacher nor the data is checked first, before any file is read.
    check_choice(method, "compression method", COMPRESSION_METHOD_NAMES)
    check_choice(regularizer, "regularizer", REGULARIZER_CHOICES)
    overrides = dict(options or {})
    resolve_settings(method, settings, **overrides)
    check_regularizer_settings(regularizer, settings, **overrides)
    check_method_regularizer(method, regularizer)
    for key in run:
        if key not in _RUN_KEYS:
            raise unknown_name(key, "option of compress_checkpoint", _RUN_KEYS)
    checked = RunOptions(out_dir=out_dir, **run)
    check_compression_out_dir(out_dir, checked.resume, checked.overwrite)
    teacher_model = resolve_model(teacher, num_classes=num_classes)
    splits = datasets_for(teacher_model, data, {"train": train_samples, "val": val_samples})
    if num_classes is not None and splits["train"].num_classes != num_classes:
        raise ValidationError(f"num_classes is {num_classes} but the data has {splits['train'].num_classes} "
                              "classes; use a teacher trained on this dataset")
    return compress(teacher_model, method, regularizer, train_set=splits["train"], val_set=splits["val"],
                    settings=settings, out_dir=out_dir, **run, **overrides)
