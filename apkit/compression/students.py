"""Students for distillation: the teacher's architecture at a fraction of its width, or any model.

The paper distils VGG16-BN into VGG16-BN/2, /4 or /8 (every channel count divided; /8 has 0.29M
parameters with the 20-class VOC head).

Examples
--------
>>> from apkit import models
>>> teacher = models.create("vgg16_bn", num_classes=20)
>>> student = make_student(teacher, width_divisor=8)
>>> models.count_parameters(student)
294364
"""

from __future__ import annotations

from torch import nn

from apkit.core.errors import ValidationError
from apkit.core.validation import check_int
from apkit.models import MODELS, create


def make_student(
    teacher: nn.Module | None = None,
    *,
    model: str | None = None,
    num_classes: int | None = None,
    width_divisor: int | None = 8,
    **options,
) -> nn.Module:
    """Build a fresh (randomly initialised) student.

    Parameters
    ----------
    teacher : torch.nn.Module, optional
        A model built by :func:`apkit.models.create`; its architecture, class count and options
        (e.g. ``input_size``) are the defaults.
    model : str, optional
        Registered architecture of the student (default: the teacher's).
    num_classes : int, optional
        Default: the teacher's.
    width_divisor : int or None
        Channel divisor (VGGs); ``None`` leaves the architecture's own width.
    **options
        Further options of :func:`apkit.models.create`.

    Returns
    -------
    torch.nn.Module
    """
    config = getattr(teacher, "apkit_config", None) if teacher is not None else None
    if model is None:
        if config is None:
            raise ValidationError(
                "the teacher was not built by apkit.models.create, so its architecture is unknown; "
                f"pass model=<one of {', '.join(MODELS.names())}> or a student model"
            )
        model = config["name"]
    if num_classes is None:
        if config is None:
            raise ValidationError("pass num_classes (the teacher's class count is unknown)")
        num_classes = config["num_classes"]
    merged = dict(config.get("options", {})) if config is not None and config["name"] == model else {}
    merged.update(options)
    if width_divisor is not None:
        merged["width_divisor"] = check_int(width_divisor, "width_divisor", minimum=1)
    elif merged.get("width_divisor") is not None and config is not None and config["name"] == model:
        merged.pop("width_divisor")  # the architecture's own width, not the teacher's
    return create(model, num_classes=num_classes, **merged)
