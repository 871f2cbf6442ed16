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
from apkit.data import INPUT_OPTIONS, spec_name
from apkit.models import build_architecture, parse_model_spec, recorded_input, resolve_model
from apkit.training import datasets_for, num_classes_of

__all__ = ["compress_checkpoint"]

# The options of a compression run compress_checkpoint passes on (out_dir is its own parameter).
_RUN_KEYS = tuple(f.name for f in dataclasses.fields(RunOptions) if f.name != "out_dir")
# Its keyword options: the run's, the input's and the student's.
_KEYS = (*_RUN_KEYS, *INPUT_OPTIONS, "student")


def input_options(teacher: str | os.PathLike, data: str, given: Mapping[str, Any]) -> dict[str, Any]:
    """The input options of the data: those ``given`` (not ``None``), else those recorded for the teacher.

    The synthetic data renders at the teacher's own size and takes none.
    """
    given = {k: v for k, v in given.items() if v is not None}
    if spec_name(data) == "synthetic":
        return given  # datasets_for refuses mean/std and sizes synthetic images itself
    return {**recorded_input(teacher), **given}


def load_student(spec: str, num_classes: int | None) -> nn.Module:
    """The KD student a spec names: ``ARCH`` alone (random weights, e.g. ``torchvision:mobilenet_v3_small``) or
    a model spec with weights (``ARCH=PATH``, ``PATH``)."""
    text = str(spec).strip()
    parsed = parse_model_spec(text) if "=" in text or not (text.startswith("torchvision:") or ":" in text) \
        else None
    if parsed is None:
        model = build_architecture(text, num_classes=num_classes)
    else:
        model = resolve_model(text, num_classes=num_classes)
    model.apkit_architecture = text.partition("=")[0]  # recorded in record.json
    return model


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
        :func:`apkit.compression.compress` (:class:`apkit.compression.api.RunOptions`);
        ``image_size``, ``mean``, ``std``: the input of data read from files (default: what the
        teacher's files record, :func:`apkit.models.recorded_input`, else the dataset's default);
        ``student``: KD only, the student's spec, an architecture alone (``torchvision:NAME``,
        ``package.module:factory``, an apkit name: random weights) or ``ARCH=PATH``.

    Examples
    --------
    >>> import tempfile
    >>> compress_checkpoint("t.pt", "structured", out_dir=tempfile.mkdtemp(), image_sise=64)
    Traceback (most recent call last):
    ...
    apkit.core.errors.UnknownNameError: unknown option of compress_checkpoint 'image_sise'; did you mean image_size? \
choose one of: image_size, resume, overwrite, device, seed, progress, mean, std, student
    """
    # Everything that needs neither the teacher nor the data is checked first, before any file is read.
    check_choice(method, "compression method", COMPRESSION_METHOD_NAMES)
    check_choice(regularizer, "regularizer", REGULARIZER_CHOICES)
    overrides = dict(options or {})
    resolve_settings(method, settings, **overrides)
    check_regularizer_settings(regularizer, settings, **overrides)
    check_method_regularizer(method, regularizer)
    for key in run:
        if key not in _KEYS:
            raise unknown_name(key, "option of compress_checkpoint", _KEYS)
    student = run.pop("student", None)
    if student is not None and method != "kd":
        raise ValidationError(f"a student applies only to method 'kd', not to {method!r}; drop it")
    inputs = input_options(teacher, data, {k: run.pop(k, None) for k in INPUT_OPTIONS})
    checked = RunOptions(out_dir=out_dir, **run)
    check_compression_out_dir(out_dir, checked.resume, checked.overwrite)
    teacher_model = resolve_model(teacher, num_classes=num_classes)
    splits = datasets_for(teacher_model, data, {"train": train_samples, "val": val_samples}, **inputs)
    classes = num_classes_of(splits["train"])
    if num_classes is not None and classes != num_classes:
        raise ValidationError(f"num_classes is {num_classes} but the data has {classes} classes; use a teacher "
                              "trained on this dataset")
    student_model = None if student is None else load_student(student, num_classes or classes)
    return compress(teacher_model, method, regularizer, train_set=splits["train"], val_set=splits["val"],
                    settings=settings, out_dir=out_dir, student=student_model, **run, **overrides)
