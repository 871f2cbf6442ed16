"""``audit_checkpoints``: audit compressed models against their original on a dataset spec (``apkit audit``)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from apkit.core.errors import ValidationError
from apkit.data import check_synthetic_only, spec_name
from apkit.evaluation.audit import TEACHER, AuditReport, audit
from apkit.models import parse_model_spec, recorded_input, resolve_model
from apkit.training import datasets_for

__all__ = ["audit_checkpoints", "model_name"]

_MODEL_FILES = ("model", "model_state")  # the files apkit compress writes: named after their run folder


def model_name(spec: str | os.PathLike) -> str:
    """The name a model spec goes by in a report: its weights file's stem, or its run folder's name.

    Examples
    --------
    >>> model_name("runs/kd-swa/model.pt")
    'kd-swa'
    >>> model_name("torchvision:resnet18=runs/pruned.pt")
    'pruned'
    >>> model_name("torchvision:mobilenet_v2=runs/l1-30/model_state.pt")
    'l1-30'
    """
    p = Path(parse_model_spec(spec).path)
    return p.parent.name if p.stem in _MODEL_FILES and p.parent.name else p.stem


def _unique_names(specs: Sequence[str | os.PathLike]) -> list[str]:
    """:func:`model_name` of each spec, with ``-2``, ``-3``, ... where names repeat (or would be the teacher's)."""
    taken, names = {TEACHER}, []
    for spec in specs:
        base = name = model_name(spec)
        count = 1
        while name in taken:
            count += 1
            name = f"{base}-{count}"
        taken.add(name)
        names.append(name)
    return names


def _input_options(teacher: str | os.PathLike, students: Sequence[str | os.PathLike] = (), *, data: str = "",
                   **given: Any) -> dict[str, Any]:
    """``image_size``, ``mean`` and ``std``: those given, else those recorded for the teacher (its training
    run's), else for the first student that has them (a compression run records its teacher's input), so
    that the models are audited on the input they were trained on."""
    recorded = recorded_input(teacher)
    for student in students:
        recorded = {**recorded_input(student), **recorded}
    if spec_name(data) == "synthetic":  # rendered at the teacher's input size, with its own normalisation
        recorded = {}
    return {**recorded, **{k: v for k, v in given.items() if v is not None}}


def audit_checkpoints(
    teacher: str | os.PathLike,
    students: Sequence[str | os.PathLike],
    *,
    data: str = "synthetic",
    split: str = "seg",
    samples: int | None = None,
    image_size: int | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    protocol: str | None = None,
    num_classes: int | None = None,
    **options: Any,
) -> AuditReport:
    """Load the models, build the segmentation split of ``data``, and :func:`~apkit.evaluation.audit`.

    Parameters
    ----------
    teacher : str or path
        The original model: a model spec (:func:`apkit.models.resolve_model`), i.e. an apkit
        checkpoint or ``ARCH=PATH`` such as ``torchvision:resnet18=weights.safetensors``.
    students : sequence of str or paths
        The compressed models' specs; each is named after its weights file (:func:`model_name`;
        repeated names get ``-2``, ``-3``, ...).
    data, split : str
        A dataset spec (``"synthetic"``, ``"voc:ROOT"``, ``"imagenet-seg:ROOT"``, ``"folder:ROOT"``)
        and its split with masks; synthetic images are rendered at the teacher's input size.
    protocol : {"teacher", "voc", "imagenet"}, optional
        Default: "imagenet" for ImageNet data, else the audit's default for the data's task
        ("teacher" for single-label data, "voc" for multi-label).
    samples : int, optional
        Synthetic data only: the number of evaluation images.
    image_size, mean, std : optional
        Data read from files: the side of the square input the images are resized to and the
        input normalisation.  Default: what the teacher's files record
        (:func:`apkit.models.recorded_input`), else what the first student's compression run
        recorded, else the model's own input size, else the data's default (224 px, ImageNet's
        normalisation).
    num_classes : int, optional
        The models' class count, needed for ``torchvision:`` and apkit names in ``ARCH=PATH``; it
        must be the data's.  Students take the data's class count when it is not given.
    **options
        Keyword arguments of :func:`apkit.evaluation.audit`: ``attribution_methods``,
        ``tolerances``, ``batch_size``, ``device``, ``progress``, ``layers``, ``faithfulness``,
        ``gates``, ...
    """
    check_synthetic_only(data, samples=samples)
    if image_size is not None and spec_name(data) == "synthetic":
        raise ValidationError("image_size applies only to data read from files: synthetic images are rendered at the "
                              "teacher's input size; drop it, or audit on your images (e.g. imagefolder:ROOT)")
    input_options = _input_options(teacher, students, data=data, image_size=image_size, mean=mean, std=std)
    names = _unique_names(students)  # a bad spec fails before any model is built
    teacher_model = resolve_model(teacher, num_classes=num_classes)
    dataset = datasets_for(teacher_model, data, {split: samples}, **input_options)[split]
    if num_classes is not None and num_classes != dataset.num_classes:
        raise ValidationError(f"num_classes is {num_classes} but the data has {dataset.num_classes} classes; "
                              "use models trained on this dataset")
    named = {name: resolve_model(spec, num_classes=dataset.num_classes) for name, spec in zip(names, students)}
    if protocol is None and spec_name(data).startswith("imagenet"):
        protocol = "imagenet"  # else the audit's default for the data's task
    return audit(teacher_model, named, dataset, protocol=protocol, **options)
